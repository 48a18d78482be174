package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// Names of the static objects in the table. Per-Service chains are
// prefixed service-, local-, external-, firewall-, and endpoint- (ClientIP
// affinity only); affinity sets affinity-.
const (
	chainFilterPreDNAT  = "filter-prerouting-pre-dnat"
	chainFilterOutPre   = "filter-output-pre-dnat"
	chainFilterInput    = "filter-input"
	chainFilterForward  = "filter-forward"
	chainFilterOutput   = "filter-output"
	chainNATPrerouting  = "nat-prerouting"
	chainNATOutput      = "nat-output"
	chainNATPostrouting = "nat-postrouting"

	chainServices         = "services"
	chainMasquerading     = "masquerading"
	chainMarkMasq         = "mark-for-masquerade"
	chainServiceEPCheck   = "service-endpoints-check"
	chainNodePortEPCheck  = "nodeport-endpoints-check"
	chainClusterIPsCheck  = "cluster-ips-check"
	chainReject           = "reject-chain"
	chainFirewallCheck    = "firewall-check"
	setClusterIPs         = "cluster-ips"
	setNodePortIPs        = "nodeport-ips"
	setHairpin            = "hairpin"
	mapServiceIPs         = "service-ips"
	mapServiceNodePorts   = "service-nodeports"
	mapNoEndpointServices = "no-endpoint-services"
	mapNoEndpointNodePort = "no-endpoint-nodeports"
	mapFirewallIPs        = "firewall-ips"

	prefixCluster  = "service-"
	prefixLocal    = "local-"
	prefixExternal = "external-"
	prefixEndpoint = "endpoint-"
	prefixFirewall = "firewall-"
	prefixAffinity = "affinity-"
)

// baseChains are hooked into netfilter. The filter chains reject traffic for
// Service ports without endpoints; reject is not allowed in prerouting on
// kernels before 5.9, hence input/forward/output. loadBalancerSourceRanges
// must be checked on the destination before DNAT, hence the two pre-dnat
// chains at a priority just before the nat chains (as kube-proxy).
var baseChains = map[string]struct {
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
}{
	chainFilterPreDNAT:  {knftables.FilterType, knftables.PreroutingHook, knftables.DNATPriority + "-10"},
	chainFilterOutPre:   {knftables.FilterType, knftables.OutputHook, knftables.DNATPriority + "-10"},
	chainFilterInput:    {knftables.FilterType, knftables.InputHook, knftables.FilterPriority},
	chainFilterForward:  {knftables.FilterType, knftables.ForwardHook, knftables.FilterPriority},
	chainFilterOutput:   {knftables.FilterType, knftables.OutputHook, knftables.FilterPriority},
	chainNATPrerouting:  {knftables.NATType, knftables.PreroutingHook, knftables.DNATPriority},
	chainNATOutput:      {knftables.NATType, knftables.OutputHook, knftables.DNATPriority},
	chainNATPostrouting: {knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority},
}

// staticSets and staticMaps are declared once; only their elements change.
var staticSets = []*knftables.Set{
	{Name: setClusterIPs, Type: "ipv4_addr", Comment: knftables.PtrTo("active ClusterIPs")},
	{Name: setNodePortIPs, Type: "ipv4_addr", Comment: knftables.PtrTo("node addresses that accept NodePort traffic")},
	{
		Name: setHairpin, Type: "ipv4_addr . ipv4_addr", Comment: knftables.PtrTo("source . source of new DNATed connections, to tell hairpin ones"),
		// Elements only need to live while postrouting looks them up; the
		// size bounds it by sources seen in one second, not connections.
		Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: knftables.PtrTo(time.Second), Size: knftables.PtrTo(uint64(65535)),
	},
}

// staticElementSets are the sets whose elements the proxy writes: rebuilt
// every sync and diffed by key (not owned by one ServicePort's fragment).
var staticElementSets = []string{setClusterIPs, setNodePortIPs}

var staticMaps = []*knftables.Map{
	{Name: mapServiceIPs, Type: "ipv4_addr . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("ClusterIP, externalIP and LoadBalancer IP traffic")},
	{Name: mapServiceNodePorts, Type: "inet_proto . inet_service : verdict", Comment: knftables.PtrTo("NodePort traffic")},
	{Name: mapNoEndpointServices, Type: "ipv4_addr . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("Service IPs and ports without usable endpoints")},
	{Name: mapNoEndpointNodePort, Type: "inet_proto . inet_service : verdict", Comment: knftables.PtrTo("NodePorts without usable endpoints")},
	{Name: mapFirewallIPs, Type: "ipv4_addr . inet_proto . inet_service : verdict", Comment: knftables.PtrTo("LoadBalancer IPs and ports restricted by loadBalancerSourceRanges")},
}

// ruleset is the complete rendered content of the table. It is a value so
// two syncs can be compared and diffed: the static part (base and dispatch
// chains, the cluster-ips and nodeport-ips sets) is small and rebuilt every
// sync; everything of one ServicePort (its chains, affinity sets and map
// elements) is one fragment, reused as is while the ServicePort does not
// change, so a sync costs in proportion to what changed.
type ruleset struct {
	chains map[string][]string
	// chainOrder lists static chains in creation order.
	chainOrder []string
	// elements: set name -> its elements (cluster-ips, nodeport-ips only).
	elements map[string]*elementList
	// frags by ServicePort name; fragOrder is State order (by name).
	frags     map[string]*fragment
	fragOrder []string
	// What fragments were rendered with; a change invalidates all of them.
	clusterCIDR netip.Prefix
	nodeIPs     []netip.Addr
}

// fragment is what one ServicePort adds to the table. Its chain, set and
// element names are its own: every name contains the ServicePort's name,
// and map keys are frontends that Compute gives to one ServicePort only.
type fragment struct {
	sp         ServicePort // rendered from
	chains     []chainRules
	affinity   []affinitySpec
	containers []containerElement
}

type chainRules struct {
	name  string
	rules []string
}

type affinitySpec struct {
	name    string
	timeout time.Duration
}

type containerElement struct {
	container string // map name
	key       string // joined key
	e         element
}

type elementList struct {
	order []string // joined keys, in insertion order
	byKey map[string]element
}

type element struct {
	key     []string
	value   string // "" for set elements
	comment string
}

func (r *ruleset) addElement(container string, e element) {
	l := r.elements[container]
	if l == nil {
		l = &elementList{byKey: map[string]element{}}
		r.elements[container] = l
	}
	k := strings.Join(e.key, " . ")
	if _, dup := l.byKey[k]; !dup {
		l.order = append(l.order, k)
	}
	l.byKey[k] = e
}

func (r *ruleset) setChain(name string, rules []string) {
	if _, ok := r.chains[name]; !ok {
		r.chainOrder = append(r.chainOrder, name)
	}
	r.chains[name] = rules
}

// hasChain reports whether the ruleset has chain name, static or of a
// ServicePort.
func (r *ruleset) hasChain(name string) bool {
	if _, ok := r.chains[name]; ok {
		return true
	}
	f := r.frags[fragmentOf(name)]
	return f != nil && f.chain(name) != nil
}

// fragmentOf returns the ServicePort name a per-Service chain or set
// belongs to: its name without prefix and endpoint suffix.
func fragmentOf(name string) string {
	for _, p := range []string{prefixCluster, prefixLocal, prefixExternal, prefixEndpoint, prefixFirewall, prefixAffinity} {
		if rest, ok := strings.CutPrefix(name, p); ok {
			base, _, _ := strings.Cut(rest, "__")
			return base
		}
	}
	return ""
}

func (f *fragment) setChain(name string, rules []string) {
	f.chains = append(f.chains, chainRules{name: name, rules: rules})
}

func (f *fragment) chain(name string) *chainRules {
	for i := range f.chains {
		if f.chains[i].name == name {
			return &f.chains[i]
		}
	}
	return nil
}

func (f *fragment) hasChain(name string) bool { return f.chain(name) != nil }

func (f *fragment) addElement(container string, e element) {
	ce := containerElement{container: container, key: strings.Join(e.key, " . "), e: e}
	for i := range f.containers {
		if f.containers[i].container == container && f.containers[i].key == ce.key {
			f.containers[i] = ce // an address listed twice (externalIP and LoadBalancer IP)
			return
		}
	}
	f.containers = append(f.containers, ce)
}

func (f *fragment) addAffinity(name string, timeout time.Duration) {
	for _, a := range f.affinity {
		if a.name == name {
			return
		}
	}
	f.affinity = append(f.affinity, affinitySpec{name: name, timeout: timeout})
}

// render turns the desired state into a ruleset. It is pure.
func render(st *State) *ruleset { return renderFrom(st, nil) }

// renderFrom is render, reusing the fragments of prev (a ruleset rendered
// earlier) whose ServicePort is unchanged. The result equals render(st).
func renderFrom(st *State, prev *ruleset) *ruleset {
	r := &ruleset{
		chains:      make(map[string][]string, 24),
		elements:    map[string]*elementList{},
		frags:       make(map[string]*fragment, len(st.ServicePorts)),
		fragOrder:   make([]string, 0, len(st.ServicePorts)),
		clusterCIDR: st.ClusterCIDR,
		nodeIPs:     st.NodeIPs,
	}
	if prev != nil && (prev.clusterCIDR != st.ClusterCIDR || !slices.Equal(prev.nodeIPs, st.NodeIPs)) {
		prev = nil
	}
	mark := fmt.Sprintf("%#x", st.MasqueradeMark)
	nodePortMatch := "fib daddr type local ip daddr != 127.0.0.0/8"
	if len(st.NodeIPs) > 0 {
		nodePortMatch = "ip daddr @" + setNodePortIPs
		for _, ip := range st.NodeIPs {
			r.addElement(setNodePortIPs, element{key: []string{ip.String()}})
		}
	}
	newOnly := "ct state new "
	r.setChain(chainFilterPreDNAT, []string{newOnly + "jump " + chainFirewallCheck})
	r.setChain(chainFilterOutPre, []string{newOnly + "jump " + chainFirewallCheck})
	r.setChain(chainFilterInput, []string{newOnly + "jump " + chainNodePortEPCheck, newOnly + "jump " + chainServiceEPCheck})
	r.setChain(chainFilterForward, []string{newOnly + "jump " + chainServiceEPCheck, newOnly + "jump " + chainClusterIPsCheck})
	r.setChain(chainFilterOutput, []string{newOnly + "jump " + chainServiceEPCheck, newOnly + "jump " + chainClusterIPsCheck})
	r.setChain(chainNATPrerouting, []string{"jump " + chainServices})
	r.setChain(chainNATOutput, []string{"jump " + chainServices})
	r.setChain(chainNATPostrouting, []string{"jump " + chainMasquerading})
	r.setChain(chainServices, []string{
		"ip daddr . meta l4proto . th dport vmap @" + mapServiceIPs,
		nodePortMatch + " meta l4proto . th dport vmap @" + mapServiceNodePorts,
	})
	r.setChain(chainMarkMasq, []string{"mark set mark or " + mark})
	r.setChain(chainMasquerading, []string{
		// Hairpin: a pod reaching itself through a Service is masqueraded,
		// or it would see its own address as the source and drop the reply.
		// Hairpin means source == destination after DNAT, and nft cannot
		// compare two fields, so: put (saddr, saddr) in @hairpin, then look
		// up (saddr, daddr); only pairs of equal addresses are ever in the
		// set, so the lookup matches exactly when daddr == saddr. Deciding
		// it here, once per new DNATed connection, spares every endpoint a
		// chain of its own (nft reads every chain of the table before each
		// transaction) and the proxy a set of endpoint addresses to sync.
		"ct status dnat update @" + setHairpin + " { ip saddr . ip saddr } ip saddr . ip daddr @" + setHairpin + " jump " + chainMarkMasq,
		"mark and " + mark + " == 0 return",
		// Clear the bit so a packet that is forwarded again is judged afresh.
		"mark set mark xor " + mark,
		"masquerade fully-random",
	})
	r.setChain(chainServiceEPCheck, []string{"ip daddr . meta l4proto . th dport vmap @" + mapNoEndpointServices})
	r.setChain(chainNodePortEPCheck, []string{nodePortMatch + " meta l4proto . th dport vmap @" + mapNoEndpointNodePort})
	// A ClusterIP port that no Service defines: refuse rather than let the
	// packet wander off the node (the Service CIDR is not routed anywhere).
	r.setChain(chainClusterIPsCheck, []string{"ip daddr @" + setClusterIPs + " goto " + chainReject})
	r.setChain(chainReject, []string{"meta l4proto tcp reject with tcp reset", "reject"})
	r.setChain(chainFirewallCheck, []string{"ip daddr . meta l4proto . th dport vmap @" + mapFirewallIPs})

	cidr := st.ClusterCIDR.String()
	for i := range st.ServicePorts {
		sp := &st.ServicePorts[i]
		name := sp.Name()
		r.addElement(setClusterIPs, element{key: []string{sp.ClusterIP.String()}})
		var f *fragment
		if prev != nil {
			if old := prev.frags[name]; old != nil && old.sp.equal(sp) {
				f = old
			}
		}
		if f == nil {
			f = &fragment{sp: *sp}
			renderServicePort(f, sp, cidr)
			renderFirewall(f, sp, st.NodeIPs)
		}
		if _, dup := r.frags[name]; !dup {
			r.fragOrder = append(r.fragOrder, name)
		}
		r.frags[name] = f
	}
	return r
}

// renderFirewall enforces loadBalancerSourceRanges as kube-proxy's nftables
// mode does: new connections to a LoadBalancer IP and port are checked
// before DNAT, from the prerouting and output hooks, so every client is
// judged by its own source address: outside clients, pods (their pod IP) and
// the node itself (its node IP). Those outside the ranges are dropped, not
// rejected, as a cloud load balancer's firewall would. Only firewalled
// frontends are in @firewall-ips, so other Services cost nothing.
func renderFirewall(r *fragment, sp *ServicePort, nodeIPs []netip.Addr) {
	if !sp.Firewalled || len(sp.LoadBalancerIPs) == 0 {
		return
	}
	chain := prefixFirewall + sp.Name()
	port := strconv.Itoa(int(sp.Port))
	for _, ip := range sp.LoadBalancerIPs {
		r.addElement(mapFirewallIPs, element{key: []string{ip.String(), sp.Protocol, port}, value: "goto " + chain})
	}
	if len(sp.SourceRanges) == 0 {
		r.setChain(chain, []string{"drop"})
		return
	}
	sources := addrStrings(sp.SourceRanges)
	// When the node may connect, a LoadBalancer IP that is also a local
	// address makes the node's packets leave with the LoadBalancer IP as
	// source; allow that too (kube-proxy's allowFromNode).
	if slices.ContainsFunc(nodeIPs, func(a netip.Addr) bool {
		return slices.ContainsFunc(sp.SourceRanges, func(p netip.Prefix) bool { return p.Contains(a) })
	}) {
		sources = append(sources, addrStrings(sp.LoadBalancerIPs)...)
	}
	r.setChain(chain, []string{"ip saddr != { " + strings.Join(sources, ", ") + " } drop"})
}

func renderServicePort(r *fragment, sp *ServicePort, cidr string) {
	base := sp.Name()
	proto := sp.Protocol
	port := strconv.Itoa(int(sp.Port))
	comment := sp.Service.String() + ":" + sp.PortName
	clusterChain := prefixCluster + base
	localChain := prefixLocal + base
	extChain := prefixExternal + base
	internalChain, externalPolicyChain := clusterChain, clusterChain
	if sp.InternalPolicyLocal {
		internalChain = localChain
	}
	if sp.ExternalPolicyLocal {
		externalPolicyChain = localChain
	}
	internal, external := sp.InternalEndpoints(), sp.ExternalEndpoints()
	usesCluster := len(sp.ClusterEndpoints) > 0 && (!sp.InternalPolicyLocal || sp.ExternallyAccessible())
	usesLocal := len(sp.LocalEndpoints) > 0 && (sp.InternalPolicyLocal || (sp.ExternalPolicyLocal && sp.ExternallyAccessible()))
	usesExt := sp.HasEndpoints() && sp.ExternallyAccessible()
	reject := "goto " + chainReject

	cip := sp.ClusterIP.String()
	if len(internal) > 0 {
		r.addElement(mapServiceIPs, element{key: []string{cip, proto, port}, value: "goto " + internalChain})
	} else {
		r.addElement(mapNoEndpointServices, element{key: []string{cip, proto, port}, value: reject, comment: comment})
	}
	for _, ips := range [][]string{addrStrings(sp.ExternalIPs), addrStrings(sp.LoadBalancerIPs)} {
		for _, ip := range ips {
			if usesExt {
				r.addElement(mapServiceIPs, element{key: []string{ip, proto, port}, value: "goto " + extChain})
			}
			// eTP Local without local endpoints: the external chain still
			// short-circuits pod and node traffic; everything else falls
			// through to this reject.
			if len(external) == 0 {
				r.addElement(mapNoEndpointServices, element{key: []string{ip, proto, port}, value: reject, comment: comment})
			}
		}
	}
	if sp.NodePort != 0 {
		np := strconv.Itoa(int(sp.NodePort))
		if usesExt {
			r.addElement(mapServiceNodePorts, element{key: []string{proto, np}, value: "goto " + extChain})
		}
		if len(external) == 0 {
			r.addElement(mapNoEndpointNodePort, element{key: []string{proto, np}, value: reject, comment: comment})
		}
	}

	// Traffic to the ClusterIP from outside the pod range (the node itself,
	// or a client routed here) is masqueraded so replies return through
	// this node and are un-DNATed.
	internalMasq := "ip daddr " + cip + " ip saddr != " + cidr + " jump " + chainMarkMasq
	if usesCluster {
		var rules []string
		if internalChain == clusterChain {
			rules = append(rules, internalMasq)
		}
		r.setChain(clusterChain, appendBalance(rules, r, sp, base, sp.ClusterEndpoints))
	}
	if usesLocal {
		var rules []string
		if internalChain == localChain {
			rules = append(rules, internalMasq)
		}
		r.setChain(localChain, appendBalance(rules, r, sp, base, sp.LocalEndpoints))
	}
	if usesExt {
		var rules []string
		if !sp.ExternalPolicyLocal {
			// Cluster policy may pick an endpoint on another node; masquerade
			// so the reply comes back here.
			rules = append(rules, "jump "+chainMarkMasq)
		} else if usesCluster {
			// Pods and the node itself reaching an external address behave as
			// if they went out to the load balancer and came back: no traffic
			// policy applies. Node traffic has a node source IP, so it needs
			// masquerade; pod traffic keeps its source.
			rules = append(rules,
				"ip saddr "+cidr+" goto "+clusterChain,
				"fib saddr type local jump "+chainMarkMasq,
				"fib saddr type local goto "+clusterChain)
		}
		if len(external) > 0 {
			rules = append(rules, "goto "+externalPolicyChain)
		}
		r.setChain(extChain, rules)
	}
}

// appendBalance adds affinity lookups and the random endpoint pick to r,
// and for ClientIP affinity the endpoint chains with their affinity sets.
//
// The pick is a cascade, as iptables' statistic match: rule i picks
// endpoint i with probability 1/(n-i), so each endpoint gets 1/n. A single
// "numgen random mod n vmap { ... }" would need an anonymous set per
// Service, and the kernel resolves a set created in the same transaction by
// a walk over the whole transaction: a full sync at 10k Services took
// minutes instead of seconds. Only a connection's first packet walks the
// cascade.
//
// Without affinity a pick DNATs directly (a NAT statement ends the chain),
// so an endpoint costs one rule and no chain: nft lists every chain of the
// table before it applies any transaction, and with a chain per endpoint
// that listing was most of the cost of a one-Service change at 1k Services.
func appendBalance(rules []string, r *fragment, sp *ServicePort, base string, eps []Endpoint) []string {
	picks := make([]string, 0, len(eps))
	for i, ep := range eps {
		ipStr, portStr := ep.IP.String(), strconv.Itoa(int(ep.Port))
		dnat := "meta l4proto " + sp.Protocol + " dnat to " + ipStr + ":" + portStr
		action := dnat
		if sp.AffinityTimeout > 0 {
			// Endpoint names use "/" instead of ":" because ":" is not
			// allowed in nft identifiers.
			epID := base + "__" + ipStr + "/" + portStr
			chain := prefixEndpoint + epID
			// The timeout is in the set's name so a changed timeout is a new
			// set (set properties cannot be modified in place).
			set := prefixAffinity + epID + "__" + strconv.Itoa(int(sp.AffinityTimeout/time.Second)) + "s"
			r.addAffinity(set, sp.AffinityTimeout)
			rules = append(rules, "ip saddr @"+set+" goto "+chain)
			if !r.hasChain(chain) {
				r.setChain(chain, []string{"update @" + set + " { ip saddr }", dnat})
			}
			action = "goto " + chain
		}
		if left := len(eps) - i; left > 1 {
			picks = append(picks, "numgen random mod "+strconv.Itoa(left)+" == 0 "+action)
		} else {
			picks = append(picks, action)
		}
	}
	return append(rules, picks...)
}

func addrStrings[T fmt.Stringer](ips []T) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// isServiceObject reports whether a chain or set is per-Service (and so may
// become stale). Every per-Service name contains "/" (namespace/name/...);
// no static name does.
func isServiceObject(name string) bool {
	return strings.Contains(name, "/")
}
