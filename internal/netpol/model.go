package netpol

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Decision is the outcome of one direction (egress of the source pod, or
// ingress of the destination pod) for one packet.
type Decision int

const (
	// NotIsolated: no policy of this direction selects the pod (or the
	// endpoint is not a pod), so the direction allows everything.
	NotIsolated Decision = iota
	// Allowed: the pod is isolated and a rule of a selecting policy matches.
	Allowed
	// Denied: the pod is isolated and no rule matches.
	Denied
)

func (d Decision) String() string {
	return [...]string{"NotIsolated", "Allowed", "Denied"}[d]
}

// Verdict is what NetworkPolicy decides for a new connection: both the
// source's egress and the destination's ingress must let it through.
type Verdict struct {
	Egress, Ingress Decision
}

// Allowed reports whether the connection may be established.
func (v Verdict) Allowed() bool { return v.Egress != Denied && v.Ingress != Denied }

// Evaluate decides, to the letter of networking.k8s.io/v1, whether a new
// connection from src to dst on port/proto is allowed. It is the reference
// model: slow, direct and pure. src and dst are matched to pods by IP (pods
// that have one, are not hostNetwork and have not terminated); any other
// address is outside the cluster's pods and only ipBlock peers match it.
// Named ports resolve on the destination pod's containerPorts in both
// directions. Traffic between a node and its own pods, which the dataplane
// always lets through, is not modelled here.
func Evaluate(policies []*networkingv1.NetworkPolicy, pods []*v1.Pod, namespaces []*v1.Namespace, src, dst netip.Addr, port int, proto v1.Protocol) Verdict {
	nsLabels := map[string]labels.Set{}
	for _, ns := range namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	srcPod, dstPod := podByIP(pods, src), podByIP(pods, dst)
	pkt := packet{src: src, dst: dst, srcPod: srcPod, dstPod: dstPod, port: port, proto: proto}
	return Verdict{
		Egress:  decide(policies, nsLabels, srcPod, networkingv1.PolicyTypeEgress, pkt),
		Ingress: decide(policies, nsLabels, dstPod, networkingv1.PolicyTypeIngress, pkt),
	}
}

type packet struct {
	src, dst       netip.Addr
	srcPod, dstPod *v1.Pod
	port           int
	proto          v1.Protocol
}

func decide(policies []*networkingv1.NetworkPolicy, nsLabels map[string]labels.Set, target *v1.Pod, dir networkingv1.PolicyType, pkt packet) Decision {
	if target == nil {
		return NotIsolated
	}
	isolated := false
	for _, np := range policies {
		if np.Namespace != target.Namespace || !hasPolicyType(np, dir) || !selectorMatches(&np.Spec.PodSelector, target.Labels) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if rulePeersMatch(np.Namespace, r.From, nsLabels, pkt.src, pkt.srcPod) && portsMatch(r.Ports, pkt.dstPod, pkt.port, pkt.proto) {
					return Allowed
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if rulePeersMatch(np.Namespace, r.To, nsLabels, pkt.dst, pkt.dstPod) && portsMatch(r.Ports, pkt.dstPod, pkt.port, pkt.proto) {
					return Allowed
				}
			}
		}
	}
	if isolated {
		return Denied
	}
	return NotIsolated
}

func rulePeersMatch(policyNS string, peers []networkingv1.NetworkPolicyPeer, nsLabels map[string]labels.Set, ip netip.Addr, pod *v1.Pod) bool {
	if len(peers) == 0 {
		return true // an empty from/to matches every peer
	}
	for i := range peers {
		if peerMatches(policyNS, &peers[i], nsLabels, ip, pod) {
			return true
		}
	}
	return false
}

func peerMatches(policyNS string, peer *networkingv1.NetworkPolicyPeer, nsLabels map[string]labels.Set, ip netip.Addr, pod *v1.Pod) bool {
	if peer.IPBlock != nil {
		return ipBlockContains(peer.IPBlock, ip)
	}
	if pod == nil || (peer.PodSelector == nil && peer.NamespaceSelector == nil) {
		return false
	}
	if peer.NamespaceSelector == nil {
		if pod.Namespace != policyNS {
			return false
		}
	} else if !selectorMatches(peer.NamespaceSelector, nsLabels[pod.Namespace]) {
		return false
	}
	return peer.PodSelector == nil || selectorMatches(peer.PodSelector, pod.Labels)
}

// portsMatch: an empty list matches every port of every protocol; an entry
// without a port matches every port of its protocol (TCP by default).
func portsMatch(ports []networkingv1.NetworkPolicyPort, dstPod *v1.Pod, port int, proto v1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if protocolOf(p) != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String: // a named port, resolved on the destination pod
			if n, ok := namedPort(dstPod, p.Port.StrVal, proto); ok && n == port {
				return true
			}
		default:
			lo, hi := int(p.Port.IntVal), int(p.Port.IntVal)
			if p.EndPort != nil {
				hi = int(*p.EndPort)
			}
			if port >= lo && port <= hi {
				return true
			}
		}
	}
	return false
}

// --- helpers shared by Evaluate and Compile ---

func protocolOf(p networkingv1.NetworkPolicyPort) v1.Protocol {
	if p.Protocol == nil {
		return v1.ProtocolTCP
	}
	return *p.Protocol
}

// hasPolicyType applies the API's defaulting: Ingress always, Egress when
// the policy has egress rules, unless policyTypes is given.
func hasPolicyType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, pt := range np.Spec.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

// selectorMatches treats an invalid selector as matching nothing: the API
// server rejects those, so one can only come from a broken object.
func selectorMatches(sel *metav1.LabelSelector, l labels.Set) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(l)
}

func ipBlockContains(b *networkingv1.IPBlock, ip netip.Addr) bool {
	c, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !c.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if x, err := netip.ParsePrefix(e); err == nil && x.Contains(ip) {
			return false
		}
	}
	return true
}

// namedPort resolves a containerPort name with its protocol on pod.
func namedPort(pod *v1.Pod, name string, proto v1.Protocol) (int, bool) {
	if pod == nil {
		return 0, false
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			p := cp.Protocol
			if p == "" {
				p = v1.ProtocolTCP
			}
			if cp.Name == name && p == proto {
				return int(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// podIPv4 returns the pod's IPv4 address if NetworkPolicy applies to it: it
// has one, is not hostNetwork and has not terminated (its IP may be reused).
func podIPv4(pod *v1.Pod) (netip.Addr, bool) {
	if pod.Spec.HostNetwork || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return netip.Addr{}, false
	}
	ips := []string{pod.Status.PodIP}
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func podByIP(pods []*v1.Pod, ip netip.Addr) *v1.Pod {
	for _, p := range pods {
		if a, ok := podIPv4(p); ok && a == ip {
			return p
		}
	}
	return nil
}
