package netpol

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// goldenPolicies: x/a and x/b (app=web) accept web pods of front-tier
// namespaces on TCP 80-81 and on their named port "web", and the outside
// world except 192.0.2.0/28 on every port; x/c may only talk to DNS-like
// UDP 53 anywhere in 10.0.0.0/8 and to z/c.
func goldenPolicies() []*networkingv1.NetworkPolicy {
	tcp, udp := v1.ProtocolTCP, v1.ProtocolUDP
	return []*networkingv1.NetworkPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{
					{
						From: []networkingv1.NetworkPolicyPeer{{
							NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}},
							PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
						}},
						Ports: []networkingv1.NetworkPolicyPort{
							{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(80)), EndPort: ptr.To[int32](81)},
							{Protocol: &tcp, Port: ptr.To(intstr.FromString("web"))},
						},
					},
					{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24", Except: []string{"192.0.2.0/28"}}}}},
				},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "db-egress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}}, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr.To(intstr.FromInt32(53))}}},
					{To: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "z"}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "c"}},
					}}},
				},
			},
		},
	}
}

// goldenTable is the reviewed dump of node-1's table for goldenPolicies.
// Reading it: x/a and x/b get separate ingress groups because "web"
// resolves to 81/TCP on x/b and to nothing on x/a (here 80-81 covers it
// anyway); the web pods of front namespaces (x/a, x/b, y/a, y/b) are
// peers, adjacent ones merged into a prefix; the ipBlock minus its except
// is one range; x/c may send UDP 53 into 10/8 and anything to z/c.
const goldenTable = `
add table ip knet-netpol { comment "knet NetworkPolicy enforcement" ; }
add chain ip knet-netpol egress-a959f7c5b7b095ab { comment "x/db-egress" ; }
add chain ip knet-netpol forward { type filter hook forward priority 0 ; }
add chain ip knet-netpol ingress-2780b669ca2a922c { comment "x/web" ; }
add chain ip knet-netpol ingress-ba14bfe7ee314f4e { comment "x/web" ; }
add set ip knet-netpol always-allowed { type ipv4_addr ; comment "node addresses and pod gateway: always reach local pods" ; }
add set ip knet-netpol egress-a959f7c5b7b095ab-any { type ipv4_addr ; flags interval ; }
add set ip knet-netpol egress-a959f7c5b7b095ab-ports { type ipv4_addr . inet_proto . inet_service ; flags interval ; }
add set ip knet-netpol ingress-2780b669ca2a922c-any { type ipv4_addr ; flags interval ; }
add set ip knet-netpol ingress-2780b669ca2a922c-ports { type ipv4_addr . inet_proto . inet_service ; flags interval ; }
add set ip knet-netpol ingress-ba14bfe7ee314f4e-any { type ipv4_addr ; flags interval ; }
add set ip knet-netpol ingress-ba14bfe7ee314f4e-ports { type ipv4_addr . inet_proto . inet_service ; flags interval ; }
add map ip knet-netpol egress-pods { type ipv4_addr : verdict ; comment "local pods isolated for egress" ; }
add map ip knet-netpol ingress-pods { type ipv4_addr : verdict ; comment "local pods isolated for ingress" ; }
add rule ip knet-netpol egress-a959f7c5b7b095ab ip daddr @egress-a959f7c5b7b095ab-any return
add rule ip knet-netpol egress-a959f7c5b7b095ab ip daddr . meta l4proto . th dport @egress-a959f7c5b7b095ab-ports return
add rule ip knet-netpol egress-a959f7c5b7b095ab drop
add rule ip knet-netpol forward ct state established,related accept
add rule ip knet-netpol forward ip saddr @always-allowed accept
add rule ip knet-netpol forward ip saddr vmap @egress-pods
add rule ip knet-netpol forward ip daddr vmap @ingress-pods
add rule ip knet-netpol ingress-2780b669ca2a922c ip saddr @ingress-2780b669ca2a922c-any accept
add rule ip knet-netpol ingress-2780b669ca2a922c ip saddr . meta l4proto . th dport @ingress-2780b669ca2a922c-ports accept
add rule ip knet-netpol ingress-2780b669ca2a922c drop
add rule ip knet-netpol ingress-ba14bfe7ee314f4e ip saddr @ingress-ba14bfe7ee314f4e-any accept
add rule ip knet-netpol ingress-ba14bfe7ee314f4e ip saddr . meta l4proto . th dport @ingress-ba14bfe7ee314f4e-ports accept
add rule ip knet-netpol ingress-ba14bfe7ee314f4e drop
add element ip knet-netpol always-allowed { 10.244.1.1 }
add element ip knet-netpol always-allowed { 172.18.0.2 }
add element ip knet-netpol egress-a959f7c5b7b095ab-any { 10.244.2.32 }
add element ip knet-netpol egress-a959f7c5b7b095ab-ports { 10.0.0.0/8 . udp . 53 }
add element ip knet-netpol ingress-2780b669ca2a922c-any { 192.0.2.16-192.0.2.255 }
add element ip knet-netpol ingress-2780b669ca2a922c-ports { 10.244.1.10/31 . tcp . 80-81 }
add element ip knet-netpol ingress-2780b669ca2a922c-ports { 10.244.1.20 . tcp . 80-81 }
add element ip knet-netpol ingress-2780b669ca2a922c-ports { 10.244.2.21 . tcp . 80-81 }
add element ip knet-netpol ingress-ba14bfe7ee314f4e-any { 192.0.2.16-192.0.2.255 }
add element ip knet-netpol ingress-ba14bfe7ee314f4e-ports { 10.244.1.10/31 . tcp . 80-81 }
add element ip knet-netpol ingress-ba14bfe7ee314f4e-ports { 10.244.1.20 . tcp . 80-81 }
add element ip knet-netpol ingress-ba14bfe7ee314f4e-ports { 10.244.2.21 . tcp . 80-81 }
add element ip knet-netpol egress-pods { 10.244.1.12 : jump egress-a959f7c5b7b095ab }
add element ip knet-netpol ingress-pods { 10.244.1.10 : jump ingress-2780b669ca2a922c }
add element ip knet-netpol ingress-pods { 10.244.1.11 : jump ingress-ba14bfe7ee314f4e }
`

func TestGoldenTable(t *testing.T) {
	nft := fakeTable(t, "node-1", goldenPolicies(), makePods(), makeNamespaces())
	got := strings.TrimSpace(nft.Dump())
	if want := strings.TrimSpace(goldenTable); got != want {
		t.Errorf("rendered table differs from golden\n--- got:\n%s\n--- want:\n%s", got, want)
	}
}
