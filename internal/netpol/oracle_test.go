package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// cyclonusVerdict asks Cyclonus's matcher, an independent implementation of
// the same API, about one probe.
func cyclonusVerdict(policies []*networkingv1.NetworkPolicy, pods []*v1.Pod, nss []*v1.Namespace, src, dst netip.Addr, port int, proto v1.Protocol) bool {
	defaulted := make([]*networkingv1.NetworkPolicy, len(policies))
	for i, np := range policies {
		np = np.DeepCopy()
		// Cyclonus expects what the API server stores: policyTypes defaulted.
		if len(np.Spec.PolicyTypes) == 0 {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			if len(np.Spec.Egress) > 0 {
				np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
			}
		}
		defaulted[i] = np
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range nss {
		nsLabels[ns.Name] = ns.Labels
	}
	peer := func(ip netip.Addr) (*matcher.TrafficPeer, *v1.Pod) {
		for _, p := range pods {
			if !p.Spec.HostNetwork && p.Status.PodIP == ip.String() {
				return &matcher.TrafficPeer{IP: ip.String(), Internal: &matcher.InternalPeer{
					PodLabels: p.Labels, NamespaceLabels: nsLabels[p.Namespace], Namespace: p.Namespace,
				}}, p
			}
		}
		return &matcher.TrafficPeer{IP: ip.String()}, nil
	}
	s, _ := peer(src)
	d, dstPod := peer(dst)
	portName := ""
	if dstPod != nil {
		for _, cp := range dstPod.Spec.Containers[0].Ports {
			p := cp.Protocol
			if p == "" {
				p = v1.ProtocolTCP
			}
			if int(cp.ContainerPort) == port && p == proto {
				portName = cp.Name
			}
		}
	}
	return matcher.BuildNetworkPolicies(false, defaulted).IsTrafficAllowed(&matcher.Traffic{
		Source: s, Destination: d, ResolvedPort: port, ResolvedPortName: portName, Protocol: proto,
	}).IsAllowed()
}

// TestEvaluateMatchesCyclonus compares the model with Cyclonus on the full
// probe matrix (9 pods + an external address, both ways, ports 80/81 TCP
// and UDP) for generated policy sets.
func TestEvaluateMatchesCyclonus(t *testing.T) {
	pods, nss := makePods(), makeNamespaces()
	eps := matrixEndpoints()
	cases := 400
	if testing.Short() {
		cases = 50
	}
	var allowed, denied int
	for seed := range cases {
		g := policyGen{rand.New(rand.NewPCG(uint64(seed), 1))}
		policies := g.policies()
		for _, src := range eps {
			for _, dst := range eps {
				if src.name == "external" && dst.name == "external" {
					continue
				}
				for _, pp := range matrixPorts {
					got := Evaluate(policies, pods, nss, src.ip, dst.ip, pp.port, pp.proto).Allowed()
					want := cyclonusVerdict(policies, pods, nss, src.ip, dst.ip, pp.port, pp.proto)
					if got != want {
						t.Fatalf("seed %d: %s -> %s %d/%s: Evaluate allowed=%v, Cyclonus allowed=%v\npolicies:\n%s",
							seed, src.name, dst.name, pp.port, pp.proto, got, want, dumpPolicies(policies))
					}
					if got {
						allowed++
					} else {
						denied++
					}
				}
			}
		}
	}
	// A generator that only ever produced one outcome would prove nothing.
	if allowed < 1000 || denied < 1000 {
		t.Fatalf("generator too one-sided: %d allowed, %d denied probes", allowed, denied)
	}
	t.Logf("%d policy sets, %d allowed and %d denied probes agree", cases, allowed, denied)
}

func dumpPolicies(nps []*networkingv1.NetworkPolicy) string {
	out := ""
	for _, np := range nps {
		out += fmt.Sprintf("  %s/%s types=%v selector=%v\n", np.Namespace, np.Name, np.Spec.PolicyTypes, np.Spec.PodSelector.String())
		for _, r := range np.Spec.Ingress {
			out += fmt.Sprintf("    ingress from=%v ports=%v\n", r.From, r.Ports)
		}
		for _, r := range np.Spec.Egress {
			out += fmt.Sprintf("    egress to=%v ports=%v\n", r.To, r.Ports)
		}
	}
	return out
}
