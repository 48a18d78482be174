package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Inputs is everything Compile reads: informer cache snapshots and the node.
type Inputs struct {
	Policies   []*networkingv1.NetworkPolicy
	Pods       []*v1.Pod
	Namespaces []*v1.Namespace
	// NodeName picks the local pods: those with spec.nodeName == NodeName.
	NodeName string
	// AlwaysAllowed are sources that may always reach local pods: the node's
	// addresses and the pod gateway (kubelet probes, node-local clients).
	AlwaysAllowed []netip.Addr
}

// State is the desired enforcement for one node.
type State struct {
	AlwaysAllowed []netip.Addr // sorted
	// Ingress and Egress map a local pod IP to the name of its policy
	// group; pods absent from a map are not isolated in that direction.
	Ingress, Egress map[netip.Addr]string
	Groups          map[string]*Group
}

// Group is the allowed traffic of pods that the same policies select. For
// ingress the peer is the packet's source, for egress its destination.
type Group struct {
	Name      string
	Direction networkingv1.PolicyType
	Policies  []string // namespace/name, sorted
	// AllowAll: some rule allows every peer on every port.
	AllowAll bool
	// AnyPort are peers allowed on every protocol and port; disjoint, sorted.
	AnyPort []addrRange
	// Ports are peer . protocol . port boxes; pairwise disjoint, sorted.
	Ports []box
}

// compiler holds the indexes of one Compile call.
type compiler struct {
	nsLabels map[string]labels.Set
	pods     []podInfo            // every pod NetworkPolicy applies to, any node
	podsByNS map[string][]podInfo // the same, by namespace
	policies map[string][]*policyInfo
	groups   map[string]*Group
	peerMemo map[peerKey][]podInfo
}

type podInfo struct {
	pod *v1.Pod
	ip  netip.Addr
}

type policyInfo struct {
	np       *networkingv1.NetworkPolicy
	id       string // namespace/name
	selector labels.Selector
	ingress  bool
	egress   bool
}

type peerKey struct {
	policy  *policyInfo
	egress  bool
	rule    int
	peerIdx int
}

// Compile computes the desired enforcement from a snapshot. It is pure and
// deterministic: equal inputs give equal states and group names.
func Compile(in Inputs) *State {
	c := &compiler{
		nsLabels: make(map[string]labels.Set, len(in.Namespaces)),
		podsByNS: map[string][]podInfo{},
		policies: map[string][]*policyInfo{},
		groups:   map[string]*Group{},
		peerMemo: map[peerKey][]podInfo{},
	}
	for _, ns := range in.Namespaces {
		c.nsLabels[ns.Name] = ns.Labels
	}
	for _, p := range in.Pods {
		if ip, ok := podIPv4(p); ok {
			pi := podInfo{pod: p, ip: ip}
			c.pods = append(c.pods, pi)
			c.podsByNS[p.Namespace] = append(c.podsByNS[p.Namespace], pi)
		}
	}
	for _, np := range in.Policies {
		sel, err := selectorOf(&np.Spec.PodSelector)
		if err != nil {
			continue // the API server rejects invalid selectors
		}
		c.policies[np.Namespace] = append(c.policies[np.Namespace], &policyInfo{
			np: np, id: np.Namespace + "/" + np.Name, selector: sel,
			ingress: hasPolicyType(np, networkingv1.PolicyTypeIngress),
			egress:  hasPolicyType(np, networkingv1.PolicyTypeEgress),
		})
	}
	for _, ps := range c.policies {
		slices.SortFunc(ps, func(a, b *policyInfo) int { return strings.Compare(a.id, b.id) })
	}

	st := &State{Ingress: map[netip.Addr]string{}, Egress: map[netip.Addr]string{}, Groups: c.groups}
	st.AlwaysAllowed = slices.Clone(in.AlwaysAllowed)
	slices.SortFunc(st.AlwaysAllowed, netip.Addr.Compare)
	st.AlwaysAllowed = slices.Compact(st.AlwaysAllowed)
	for _, p := range c.pods {
		if p.pod.Spec.NodeName != in.NodeName {
			continue
		}
		var ing, eg []*policyInfo
		for _, pi := range c.policies[p.pod.Namespace] {
			if !pi.selector.Matches(labels.Set(p.pod.Labels)) {
				continue
			}
			if pi.ingress {
				ing = append(ing, pi)
			}
			if pi.egress {
				eg = append(eg, pi)
			}
		}
		if len(ing) > 0 {
			st.Ingress[p.ip] = c.group(networkingv1.PolicyTypeIngress, ing, p.pod).Name
		}
		if len(eg) > 0 {
			st.Egress[p.ip] = c.group(networkingv1.PolicyTypeEgress, eg, p.pod).Name
		}
	}
	return st
}

func selectorOf(sel *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(sel)
}

// group returns the group of the pods that exactly these policies select.
// Ingress named ports resolve on the selected pod, so for ingress the key
// also holds the pod's numbers for every named port the policies use.
func (c *compiler) group(dir networkingv1.PolicyType, pis []*policyInfo, target *v1.Pod) *Group {
	var key strings.Builder
	key.WriteString(string(dir))
	ids := make([]string, len(pis))
	for i, pi := range pis {
		ids[i] = pi.id
		key.WriteString("\x00" + pi.id)
	}
	if dir == networkingv1.PolicyTypeIngress {
		for _, pi := range pis {
			for _, r := range pi.np.Spec.Ingress {
				for _, p := range r.Ports {
					if p.Port != nil && p.Port.Type == intstr.String {
						n, _ := namedPort(target, p.Port.StrVal, protocolOf(p))
						fmt.Fprintf(&key, "\x00%s/%s=%d", p.Port.StrVal, protocolOf(p), n)
					}
				}
			}
		}
	}
	sum := sha256.Sum256([]byte(key.String()))
	name := strings.ToLower(string(dir)) + "-" + hex.EncodeToString(sum[:8])
	if g := c.groups[name]; g != nil {
		return g
	}
	g := &Group{Name: name, Direction: dir, Policies: ids}
	var anyPort []addrRange
	var boxes []box
	for _, pi := range pis {
		if dir == networkingv1.PolicyTypeIngress {
			for ri, r := range pi.np.Spec.Ingress {
				peers := c.peerRanges(pi, false, ri, r.From)
				anyPort, boxes = addRule(anyPort, boxes, peers, r.Ports, func(name string, proto v1.Protocol) []box {
					if n, ok := namedPort(target, name, proto); ok {
						return boxesFor(peers, proto, portRange{n, n})
					}
					return nil
				})
			}
			continue
		}
		for ri, r := range pi.np.Spec.Egress {
			peers := c.peerRanges(pi, true, ri, r.To)
			anyPort, boxes = addRule(anyPort, boxes, peers, r.Ports, func(name string, proto v1.Protocol) []box {
				// Egress named ports resolve on each destination pod.
				var out []box
				for _, p := range c.peerPods(pi, true, ri, r.To) {
					if n, ok := namedPort(p.pod, name, proto); ok {
						out = append(out, box{hostRange(p.ip), nftProto(proto), portRange{n, n}})
					}
				}
				return out
			})
		}
	}
	g.AnyPort = mergeRanges(anyPort)
	if len(g.AnyPort) == 1 && g.AnyPort[0] == allAddrs {
		g.AllowAll, g.AnyPort = true, nil
	} else {
		g.Ports = disjointBoxes(boxes)
	}
	c.groups[name] = g
	return g
}

// addRule adds one rule's traffic: its peers on every port when it lists no
// ports, else one box per peer range and port entry.
func addRule(anyPort []addrRange, boxes []box, peers []addrRange, ports []networkingv1.NetworkPolicyPort, named func(string, v1.Protocol) []box) ([]addrRange, []box) {
	if len(ports) == 0 {
		return append(anyPort, peers...), boxes
	}
	for _, p := range ports {
		proto := protocolOf(p)
		if nftProto(proto) == "" {
			continue
		}
		switch {
		case p.Port == nil:
			boxes = append(boxes, boxesFor(peers, proto, portRange{0, 65535})...)
		case p.Port.Type == intstr.String:
			boxes = append(boxes, named(p.Port.StrVal, proto)...)
		default:
			pr := portRange{int(p.Port.IntVal), int(p.Port.IntVal)}
			if p.EndPort != nil {
				pr.hi = int(*p.EndPort)
			}
			if pr.lo <= pr.hi {
				boxes = append(boxes, boxesFor(peers, proto, pr)...)
			}
		}
	}
	return anyPort, boxes
}

func boxesFor(peers []addrRange, proto v1.Protocol, pr portRange) []box {
	out := make([]box, len(peers))
	for i, r := range peers {
		out[i] = box{r, nftProto(proto), pr}
	}
	return out
}

func nftProto(p v1.Protocol) string {
	switch p {
	case v1.ProtocolTCP:
		return "tcp"
	case v1.ProtocolUDP:
		return "udp"
	case v1.ProtocolSCTP:
		return "sctp"
	}
	return ""
}

// peerRanges is the address ranges a rule's from/to matches: every address
// when empty, else the union of its peers (pod IPs, ipBlocks).
func (c *compiler) peerRanges(pi *policyInfo, egress bool, rule int, peers []networkingv1.NetworkPolicyPeer) []addrRange {
	if len(peers) == 0 {
		return []addrRange{allAddrs}
	}
	var out []addrRange
	for i := range peers {
		if b := peers[i].IPBlock; b != nil {
			out = append(out, ipBlockRanges(b.CIDR, b.Except)...)
			continue
		}
		for _, p := range c.selectedPeers(pi, peerKey{pi, egress, rule, i}, &peers[i]) {
			out = append(out, hostRange(p.ip))
		}
	}
	return mergeRanges(out)
}

// peerPods is the pods a rule's from/to matches (for named port resolution).
func (c *compiler) peerPods(pi *policyInfo, egress bool, rule int, peers []networkingv1.NetworkPolicyPeer) []podInfo {
	if len(peers) == 0 {
		return c.pods
	}
	seen := map[netip.Addr]bool{}
	var out []podInfo
	for i := range peers {
		var ps []podInfo
		if b := peers[i].IPBlock; b != nil {
			for _, p := range c.pods {
				if ipBlockContains(b, p.ip) {
					ps = append(ps, p)
				}
			}
		} else {
			ps = c.selectedPeers(pi, peerKey{pi, egress, rule, i}, &peers[i])
		}
		for _, p := range ps {
			if !seen[p.ip] {
				seen[p.ip] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// selectedPeers is the pods a podSelector/namespaceSelector peer matches,
// memoized per peer: many groups share a policy.
func (c *compiler) selectedPeers(pi *policyInfo, k peerKey, peer *networkingv1.NetworkPolicyPeer) []podInfo {
	if ps, ok := c.peerMemo[k]; ok {
		return ps
	}
	var out []podInfo
	if peer.PodSelector != nil || peer.NamespaceSelector != nil {
		podSel, nsSel := labels.Everything(), labels.Selector(nil)
		var err error
		if peer.PodSelector != nil {
			if podSel, err = selectorOf(peer.PodSelector); err != nil {
				podSel = labels.Nothing()
			}
		}
		if peer.NamespaceSelector != nil {
			if nsSel, err = selectorOf(peer.NamespaceSelector); err != nil {
				nsSel = labels.Nothing()
			}
		}
		check := func(ps []podInfo) {
			for _, p := range ps {
				if podSel.Matches(labels.Set(p.pod.Labels)) {
					out = append(out, p)
				}
			}
		}
		if nsSel == nil {
			check(c.podsByNS[pi.np.Namespace])
		} else {
			for ns, ps := range c.podsByNS {
				if nsSel.Matches(c.nsLabels[ns]) {
					check(ps)
				}
			}
		}
	}
	c.peerMemo[k] = out
	return out
}
