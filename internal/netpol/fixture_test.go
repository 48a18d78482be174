package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The test cluster: namespaces x, y, z with pods a, b, c each, spread over
// two nodes, plus one address outside the cluster. Named ports differ per
// pod so that resolving on the wrong pod shows.
const externalIP = "192.0.2.10"

var (
	fixtureNamespaces = []string{"x", "y", "z"}
	fixturePods       = []string{"a", "b", "c"}
	nsTier            = map[string]string{"x": "front", "y": "front", "z": "back"}
	podApp            = map[string]string{"a": "web", "b": "web", "c": "db"}
)

func fixtureNode(ns, pod string) string {
	if ns == "x" || (ns == "y" && pod == "a") {
		return "node-1"
	}
	return "node-2"
}

func fixtureIP(ns, pod string) netip.Addr {
	n := byte(1)
	if fixtureNode(ns, pod) == "node-2" {
		n = 2
	}
	return netip.AddrFrom4([4]byte{10, 244, n, byte(10 + 10*(ns[0]-'x') + (pod[0] - 'a'))})
}

func makeNamespaces() []*v1.Namespace {
	var out []*v1.Namespace
	for _, ns := range fixtureNamespaces {
		out = append(out, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
			"kubernetes.io/metadata.name": ns, "ns": ns, "tier": nsTier[ns],
		}}})
	}
	return out
}

func makePods() []*v1.Pod {
	var out []*v1.Pod
	for _, ns := range fixtureNamespaces {
		for _, name := range fixturePods {
			ports := []v1.ContainerPort{
				{Name: "serve-80-tcp", ContainerPort: 80, Protocol: v1.ProtocolTCP},
				{Name: "serve-80-udp", ContainerPort: 80, Protocol: v1.ProtocolUDP},
				{Name: "serve-81-udp", ContainerPort: 81, Protocol: v1.ProtocolUDP},
			}
			// Only b names 81/TCP "web"; a and c name it "serve-81-tcp".
			if name == "b" {
				ports = append(ports, v1.ContainerPort{Name: "web", ContainerPort: 81}) // protocol defaults to TCP
			} else {
				ports = append(ports, v1.ContainerPort{Name: "serve-81-tcp", ContainerPort: 81, Protocol: v1.ProtocolTCP})
			}
			out = append(out, &v1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name, "app": podApp[name]}},
				Spec:       v1.PodSpec{NodeName: fixtureNode(ns, name), Containers: []v1.Container{{Name: "c", Ports: ports}}},
				Status:     v1.PodStatus{Phase: v1.PodRunning, PodIP: fixtureIP(ns, name).String()},
			})
		}
	}
	// A hostNetwork pod shares the node's address: never policed, never a pod peer.
	out = append(out, &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "host", Labels: map[string]string{"pod": "a", "app": "web"}},
		Spec:       v1.PodSpec{NodeName: "node-1", HostNetwork: true},
		Status:     v1.PodStatus{Phase: v1.PodRunning, PodIP: "172.18.0.2"},
	})
	return out
}

// endpoint is one row/column of the probe matrix.
type endpoint struct {
	name string // ns/pod or "external"
	ip   netip.Addr
}

func matrixEndpoints() []endpoint {
	var out []endpoint
	for _, ns := range fixtureNamespaces {
		for _, p := range fixturePods {
			out = append(out, endpoint{ns + "/" + p, fixtureIP(ns, p)})
		}
	}
	return append(out, endpoint{"external", netip.MustParseAddr(externalIP)})
}

type probePort struct {
	port  int
	proto v1.Protocol
}

var matrixPorts = []probePort{{80, v1.ProtocolTCP}, {81, v1.ProtocolTCP}, {80, v1.ProtocolUDP}, {81, v1.ProtocolUDP}}

// policyGen draws NetworkPolicies from building blocks that together cover
// every feature of the API: pod, namespace and combined selectors (AND) and
// several peers (OR), match expressions, ipBlock with except (external and
// pod addresses), numbered, named and ranged ports, TCP/UDP/SCTP, protocol
// without port, empty rules, deny-all, and defaulted or explicit policyTypes.
type policyGen struct{ r *rand.Rand }

func (g policyGen) pick(n int) int { return g.r.IntN(n) }

func (g policyGen) selector() *metav1.LabelSelector {
	switch g.pick(6) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"pod": fixturePods[g.pick(3)]}}
	case 2:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	case 3:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"c"}}}}
	case 4:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "web"}}, {Key: "pod", Operator: metav1.LabelSelectorOpExists}}}
	default:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	}
}

func (g policyGen) nsSelector() *metav1.LabelSelector {
	switch g.pick(4) {
	case 0:
		return &metav1.LabelSelector{}
	case 1:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"ns": fixtureNamespaces[g.pick(3)]}}
	case 2:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"y"}}}}
	}
}

var ipBlocks = []networkingv1.IPBlock{
	{CIDR: "10.244.0.0/16", Except: []string{"10.244.1.0/24"}},
	{CIDR: "192.0.2.0/24"},
	{CIDR: "10.244.2.11/32"},
	{CIDR: "0.0.0.0/0", Except: []string{"10.244.0.0/16"}},
	{CIDR: "10.244.1.0/24", Except: []string{"10.244.1.10/32", "10.244.1.12/31"}},
	{CIDR: "0.0.0.0/0"},
}

func (g policyGen) peers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for range g.pick(3) {
		switch g.pick(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.nsSelector()})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.selector(), NamespaceSelector: g.nsSelector()})
		default:
			b := ipBlocks[g.pick(len(ipBlocks))]
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &b})
		}
	}
	return out
}

func (g policyGen) ports() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	tcp, udp, sctp := v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP
	for range g.pick(3) {
		var p networkingv1.NetworkPolicyPort
		switch g.pick(9) {
		case 0:
			p = networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(80))}
		case 1:
			p = networkingv1.NetworkPolicyPort{Protocol: &udp, Port: ptr.To(intstr.FromInt32(81))}
		case 2:
			p = networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(81))} // TCP by default
		case 3:
			p = networkingv1.NetworkPolicyPort{Protocol: &tcp}
		case 4:
			p = networkingv1.NetworkPolicyPort{Protocol: &udp, Port: ptr.To(intstr.FromString("serve-80-udp"))}
		case 5:
			p = networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr.To(intstr.FromString("web"))}
		case 6:
			p = networkingv1.NetworkPolicyPort{Protocol: &udp, Port: ptr.To(intstr.FromInt32(79)), EndPort: ptr.To[int32](80)}
		case 7:
			p = networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromString("serve-81-tcp"))}
		default:
			p = networkingv1.NetworkPolicyPort{Protocol: &sctp, Port: ptr.To(intstr.FromInt32(80))}
		}
		out = append(out, p)
	}
	return out
}

func (g policyGen) policy(i int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fixtureNamespaces[g.pick(3)], Name: fmt.Sprintf("np%d", i)}}
	np.Spec.PodSelector = *g.selector()
	for range g.pick(3) {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: g.peers(), Ports: g.ports()})
	}
	for range g.pick(3) {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: g.peers(), Ports: g.ports()})
	}
	switch g.pick(4) {
	case 0: // defaulted by the API's rules
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	default:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	return np
}

func (g policyGen) policies() []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for i := range 1 + g.pick(4) {
		out = append(out, g.policy(i))
	}
	return out
}
