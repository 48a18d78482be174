package proxy

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

func TestGoldenStaticTable(t *testing.T) {
	nft, _ := applyFull(t, testInputs())
	if d := diffLines(trimGolden(goldenStatic), trimGolden(nft.Dump())); d != "" {
		t.Errorf("static table differs from golden (-want +got):\n%s", d)
	}
}

func TestGoldenServiceRules(t *testing.T) {
	for _, c := range ruleCases() {
		t.Run(c.name, func(t *testing.T) {
			want, ok := goldenRules[c.name]
			if !ok {
				t.Fatalf("no golden for %q", c.name)
			}
			got := serviceLines(t, testInputs(c.objs...))
			if d := diffLines(trimGolden(want), trimGolden(got)); d != "" {
				t.Errorf("rules differ from golden (-want +got):\n%s", d)
			}
		})
	}
}

func TestPacketFlows(t *testing.T) {
	var objs []any
	for _, c := range ruleCases() {
		objs = append(objs, c.objs...)
	}
	nft, _ := applyFull(t, testInputs(objs...))
	local := []netip.Addr{testNodeIP, netip.MustParseAddr("10.244.1.1")}
	const (
		pod      = "10.244.1.9"
		outside  = "172.18.0.100"
		node     = "172.18.0.2"
		ep1, ep2 = "10.244.1.5:8080", "10.244.2.5:8080"
	)
	tests := []struct {
		name string
		pkt  packet
		want traceResult
	}{
		{"pod to ClusterIP balances over both endpoints, no masquerade", packet{pod, "10.96.0.10", "tcp", 80, false}, traceResult{"ACCEPT", ep1 + ", " + ep2, false}},
		{"node to ClusterIP is masqueraded", packet{node, "10.96.0.10", "tcp", 80, true}, traceResult{"ACCEPT", ep1 + ", " + ep2, true}},
		{"outside client to ClusterIP is masqueraded", packet{outside, "10.96.0.10", "tcp", 80, false}, traceResult{"ACCEPT", ep1 + ", " + ep2, true}},
		{"undefined port of a ClusterIP is rejected", packet{pod, "10.96.0.10", "tcp", 81, false}, traceResult{verdict: "REJECT"}},
		{"wrong protocol of a ClusterIP is rejected", packet{pod, "10.96.0.10", "udp", 80, false}, traceResult{verdict: "REJECT"}},
		{"NodePort from outside", packet{outside, node, "tcp", 30080, false}, traceResult{"ACCEPT", ep2, true}},
		{"NodePort from the node itself", packet{node, node, "tcp", 30080, true}, traceResult{"ACCEPT", ep2, true}},
		{"NodePort on localhost is not served", packet{"127.0.0.1", "127.0.0.1", "tcp", 30080, true}, traceResult{verdict: "ACCEPT"}},
		{"NodePort on a non-node address is not served", packet{outside, "10.244.1.1", "tcp", 30080, false}, traceResult{verdict: "ACCEPT"}},
		{"LoadBalancer IP", packet{outside, "172.18.255.10", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"externalIP", packet{outside, "192.0.2.10", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"hairpin: endpoint reaching itself is masqueraded", packet{"10.244.2.5", "10.96.0.20", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"no endpoints: ClusterIP rejected", packet{pod, "10.96.0.50", "tcp", 80, false}, traceResult{verdict: "REJECT"}},
		{"no endpoints: NodePort rejected", packet{outside, node, "tcp", 30082, false}, traceResult{verdict: "REJECT"}},
		{"affinity Service balances like any other", packet{pod, "10.96.0.60", "tcp", 80, false}, traceResult{"ACCEPT", ep1 + ", " + ep2, false}},
		{"eTP Local: outside to LB IP reaches only local endpoints, keeps client IP", packet{outside, "172.18.255.11", "tcp", 80, false}, traceResult{"ACCEPT", ep1, false}},
		{"eTP Local: outside to NodePort reaches only local endpoints, keeps client IP", packet{outside, node, "tcp", 30083, false}, traceResult{"ACCEPT", ep1, false}},
		{"eTP Local: pod to LB IP short-circuits to all endpoints", packet{pod, "172.18.255.11", "tcp", 80, false}, traceResult{"ACCEPT", ep1 + ", " + ep2, false}},
		{"eTP Local: node to LB IP short-circuits, masqueraded", packet{node, "172.18.255.11", "tcp", 80, true}, traceResult{"ACCEPT", ep1 + ", " + ep2, true}},
		{"eTP Local: ClusterIP still uses all endpoints", packet{pod, "10.96.0.70", "tcp", 80, false}, traceResult{"ACCEPT", ep1 + ", " + ep2, false}},
		{"eTP Local without local endpoints: outside to LB IP rejected", packet{outside, "172.18.255.12", "tcp", 80, false}, traceResult{verdict: "REJECT"}},
		{"eTP Local without local endpoints: outside to NodePort rejected", packet{outside, node, "tcp", 30084, false}, traceResult{verdict: "REJECT"}},
		{"eTP Local without local endpoints: pod to LB IP still served", packet{pod, "172.18.255.12", "tcp", 80, false}, traceResult{"ACCEPT", ep2, false}},
		{"iTP Local: ClusterIP reaches only the local endpoint", packet{pod, "10.96.0.80", "tcp", 80, false}, traceResult{"ACCEPT", ep1, false}},
		{"iTP Local without local endpoints: rejected", packet{pod, "10.96.0.81", "tcp", 80, false}, traceResult{verdict: "REJECT"}},
		{"terminating fallback: serving+terminating endpoint used", packet{pod, "10.96.0.90", "tcp", 80, false}, traceResult{"ACCEPT", "10.244.2.21:8080", false}},
		{"UDP port", packet{pod, "10.96.0.100", "udp", 53, false}, traceResult{"ACCEPT", "10.244.2.5:5353", false}},
		{"SCTP port", packet{pod, "10.96.0.100", "sctp", 9999, false}, traceResult{"ACCEPT", "10.244.2.5:9999", false}},
		{"TCP to a UDP-only port is rejected", packet{pod, "10.96.0.100", "tcp", 53, false}, traceResult{verdict: "REJECT"}},
		{"PreferClose: same-zone endpoint only", packet{pod, "10.96.0.110", "tcp", 80, false}, traceResult{"ACCEPT", "10.244.2.30:8080", false}},
		{"PreferSameNode: same-node endpoint only", packet{pod, "10.96.0.120", "tcp", 80, false}, traceResult{"ACCEPT", "10.244.1.40:8080", false}},
		{"pod to pod traffic is untouched", packet{pod, "10.244.2.5", "tcp", 8080, false}, traceResult{verdict: "ACCEPT"}},
		{"sourceRanges: client in a range reaches the LB IP", packet{"192.0.2.7", "172.18.255.13", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: the /32 client reaches the LB IP", packet{outside, "172.18.255.13", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: host bits of an entry are ignored", packet{"198.51.100.200", "172.18.255.13", "tcp", 80, false}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: client outside every range is dropped", packet{"172.18.0.101", "172.18.255.13", "tcp", 80, false}, traceResult{verdict: "DROP"}},
		{"sourceRanges: pod outside the ranges is dropped (as kube-proxy)", packet{pod, "172.18.255.13", "tcp", 80, false}, traceResult{verdict: "DROP"}},
		{"sourceRanges: node outside the ranges is dropped (as kube-proxy)", packet{node, "172.18.255.13", "tcp", 80, true}, traceResult{verdict: "DROP"}},
		{"sourceRanges: other ports of the LB IP are not firewalled", packet{"172.18.0.101", "172.18.255.13", "tcp", 81, false}, traceResult{verdict: "ACCEPT"}},
		{"sourceRanges: NodePort is not restricted", packet{"172.18.0.101", node, "tcp", 30085, false}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: ClusterIP is not restricted", packet{pod, "10.96.0.130", "tcp", 80, false}, traceResult{"ACCEPT", ep2, false}},
		{"sourceRanges: node inside a range reaches the LB IP", packet{node, "172.18.255.14", "tcp", 80, true}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: node via the LB IP as source is allowed", packet{"172.18.255.14", "172.18.255.14", "tcp", 80, true}, traceResult{"ACCEPT", ep2, true}},
		{"sourceRanges: pod outside a range with the node in it is dropped", packet{pod, "172.18.255.14", "tcp", 80, false}, traceResult{verdict: "DROP"}},
		{"sourceRanges all invalid: everyone is dropped", packet{outside, "172.18.255.15", "tcp", 80, false}, traceResult{verdict: "DROP"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tracePacket(t, nft, local, tc.pkt); got != tc.want {
				t.Errorf("trace %+v:\n got %+v\nwant %+v", tc.pkt, got, tc.want)
			}
		})
	}
}

// TestNodePortWithoutNodeIPs: with no NodeIPs, every local address except
// loopback answers NodePorts.
func TestNodePortWithoutNodeIPs(t *testing.T) {
	in := testInputs(ruleCases()[1].objs...)
	in.NodeIPs = nil
	nft, _ := applyFull(t, in)
	local := []netip.Addr{testNodeIP, netip.MustParseAddr("10.244.1.1")}
	for _, dst := range []string{"172.18.0.2", "10.244.1.1"} {
		got := tracePacket(t, nft, local, packet{"172.18.0.100", dst, "tcp", 30080, false})
		if got.dnat != "10.244.2.5:8080" {
			t.Errorf("NodePort on %s: got %+v, want DNAT to 10.244.2.5:8080", dst, got)
		}
	}
	if got := tracePacket(t, nft, local, packet{"127.0.0.1", "127.0.0.1", "tcp", 30080, true}); got.dnat != "" {
		t.Errorf("localhost NodePort: got %+v, want no DNAT", got)
	}
}

// TestSecondSyncChangesNothing: an unchanged state yields an empty
// incremental transaction, and a forced full sync rewrites the table to the
// same content.
func TestSecondSyncChangesNothing(t *testing.T) {
	var objs []any
	for _, c := range ruleCases() {
		objs = append(objs, c.objs...)
	}
	in := testInputs(objs...)
	nft, _ := applyFull(t, in)
	first := nft.Dump()

	applied := render(Compute(in))
	tx := nft.NewTransaction()
	if stale := plan(tx, applied, render(Compute(in)), nil, false); len(stale) != 0 {
		t.Errorf("stale chains on an unchanged sync: %v", stale)
	}
	if n := tx.NumOperations(); n != 0 {
		t.Errorf("incremental sync of an unchanged state has %d operations:\n%s", n, tx)
	}

	existing, _ := nft.ListAll(context.Background())
	tx = nft.NewTransaction()
	plan(tx, nil, render(Compute(in)), existing, false)
	if err := nft.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if second := nft.Dump(); second != first {
		t.Errorf("full resync changed the table:\n%s", diffLines(first, second))
	}
}

// TestIncrementalEqualsFull walks through a series of changes; after each,
// the incrementally updated table must equal a table built from scratch
// (once stale chains are deleted, as the proxier does a second later).
func TestIncrementalEqualsFull(t *testing.T) {
	cases := ruleCases()
	steps := [][]any{
		nil,
		append(cases[0].objs, cases[5].objs...), // clusterIP + affinity
		append(cases[1].objs, cases[5].objs...), // web removed, NodePort added
		{ // affinity timeout changes; NodePort loses its endpoints
			makeService("ns1", "sticky", "10.96.0.60", func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			}),
			cases[5].objs[1],
			cases[1].objs[0],
		},
		append(append(cases[6].objs, cases[11].objs...), cases[0].objs...),
		append(cases[15].objs, cases[17].objs...), // firewalls appear
		{ // ranges change; the invalid one is fixed
			makeService("ns1", "fw", "10.96.0.130", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30085
				s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.13"}}
			}),
			cases[15].objs[1],
			makeService("ns1", "fw-bad", "10.96.0.132", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30087
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/32"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.15"}}
			}),
			cases[17].objs[1],
		},
		{ // the field is removed
			makeService("ns1", "fw", "10.96.0.130", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30085
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.13"}}
			}),
			cases[15].objs[1],
		},
		nil,
	}
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	ctx := context.Background()
	var applied *ruleset
	var memo Memo
	for i, objs := range steps {
		// Reuses unchanged endpoint selections and fragments.
		next := renderFrom(ComputeWith(testInputs(objs...), &memo), applied)
		tx := nft.NewTransaction()
		stale := plan(tx, applied, next, nil, applied == nil)
		if err := nft.Run(ctx, tx); err != nil {
			t.Fatalf("step %d: %v\n%s", i, err, tx)
		}
		applied = next
		del := nft.NewTransaction()
		for _, c := range stale {
			del.Delete(&knftables.Chain{Name: c})
		}
		if err := nft.Run(ctx, del); err != nil {
			t.Fatalf("step %d: delete stale: %v", i, err)
		}
		fresh, _ := applyFull(t, testInputs(objs...))
		if d := diffLines(fresh.Dump(), nft.Dump()); d != "" {
			t.Errorf("step %d: incremental table differs from a full build (-full +incremental):\n%s", i, d)
		}
	}
}

func TestComputeProblems(t *testing.T) {
	older := makeService("ns1", "a", "10.96.0.1", func(s *v1.Service) {
		s.Spec.ExternalIPs = []string{"192.0.2.1"}
	})
	newer := makeService("ns1", "b", "10.96.0.2", func(s *v1.Service) {
		s.CreationTimestamp.Time = older.CreationTimestamp.Add(1)
		s.Spec.ExternalIPs = []string{"192.0.2.1", "not-an-ip"}
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "icmp", Protocol: "ICMP", Port: 1})
	})
	st := Compute(testInputs(newer, older))
	var msgs []string
	for _, p := range st.Problems {
		if p.Service.Name != "b" {
			t.Errorf("problem reported on %s, want only on the newer Service b: %+v", p.Service, p)
		}
		msgs = append(msgs, p.Reason)
	}
	if got := strings.Join(msgs, ","); got != "InvalidIP,FrontendConflict,UnsupportedProtocol" {
		t.Errorf("problems = %s, want InvalidIP,FrontendConflict,UnsupportedProtocol", got)
	}
	// Both Services are still programmed; only a keeps the externalIP.
	if len(st.ServicePorts) != 2 {
		t.Fatalf("got %d service ports, want 2: %+v", len(st.ServicePorts), st.ServicePorts)
	}
	for _, sp := range st.ServicePorts {
		wantExt := sp.Service.Name == "a"
		if (len(sp.ExternalIPs) == 1) != wantExt {
			t.Errorf("%s externalIPs = %v", sp.Service, sp.ExternalIPs)
		}
	}
}

func TestEndpointSelection(t *testing.T) {
	tests := []struct {
		name          string
		eps           []ep
		cluster, locl string
	}{
		{"ready only; not-ready ignored", []ep{{ip: "10.0.0.1", node: testNode}, {ip: "10.0.0.2", notReady: true, notServing: true}}, "10.0.0.1:80", "10.0.0.1:80"},
		{"terminating used only when nothing is ready", []ep{{ip: "10.0.0.1", node: "x"}, {ip: "10.0.0.2", node: testNode, notReady: true, terminating: true}}, "10.0.0.1:80", "10.0.0.2:80"},
		{"terminating but not serving is never used", []ep{{ip: "10.0.0.2", notReady: true, notServing: true, terminating: true}}, "", ""},
		{"zone hints narrow", []ep{{ip: "10.0.0.1", forZones: []string{testZone}}, {ip: "10.0.0.2", forZones: []string{"other"}}}, "10.0.0.1:80", ""},
		{"zone hints that do not fit fall back to all", []ep{{ip: "10.0.0.1", forZones: []string{"z1"}}, {ip: "10.0.0.2", forZones: []string{"z2"}}}, "10.0.0.1:80,10.0.0.2:80", ""},
		{"partial hints are ignored", []ep{{ip: "10.0.0.1", forZones: []string{testZone}}, {ip: "10.0.0.2"}}, "10.0.0.1:80,10.0.0.2:80", ""},
		{"node hints beat zone hints", []ep{{ip: "10.0.0.1", forNodes: []string{testNode}, forZones: []string{"z"}}, {ip: "10.0.0.2", forNodes: []string{"b"}, forZones: []string{testZone}}}, "10.0.0.1:80", ""},
		{"node hints that do not fit fall back to zone hints", []ep{{ip: "10.0.0.1", forNodes: []string{"c"}, forZones: []string{"z"}}, {ip: "10.0.0.2", forNodes: []string{"b"}, forZones: []string{testZone}}}, "10.0.0.2:80", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := makeService("ns", "s", "10.96.0.1", nil)
			sl := makeSlice("ns", "s", "s-1", "http", v1.ProtocolTCP, 80, tc.eps...)
			st := Compute(testInputs(svc, sl))
			sp := st.ServicePorts[0]
			join := func(eps []Endpoint) string {
				var s []string
				for _, e := range eps {
					s = append(s, e.String())
				}
				return strings.Join(s, ",")
			}
			if got := join(sp.ClusterEndpoints); got != tc.cluster {
				t.Errorf("cluster endpoints = %q, want %q", got, tc.cluster)
			}
			if got := join(sp.LocalEndpoints); got != tc.locl {
				t.Errorf("local endpoints = %q, want %q", got, tc.locl)
			}
		})
	}
}

// TestDuplicateEndpointAcrossSlices: an endpoint in two slices (a slice
// mid-update) appears once, with its best condition.
func TestDuplicateEndpointAcrossSlices(t *testing.T) {
	svc := makeService("ns", "s", "10.96.0.1", nil)
	a := makeSlice("ns", "s", "s-1", "http", v1.ProtocolTCP, 80, ep{ip: "10.0.0.1", notReady: true, notServing: true})
	b := makeSlice("ns", "s", "s-2", "http", v1.ProtocolTCP, 80, ep{ip: "10.0.0.1"})
	st := Compute(testInputs(svc, a, b))
	if eps := st.ServicePorts[0].ClusterEndpoints; len(eps) != 1 || eps[0].String() != "10.0.0.1:80" {
		t.Errorf("endpoints = %v, want [10.0.0.1:80]", eps)
	}
}

// TestSourceRanges: how spec.loadBalancerSourceRanges becomes a firewall,
// following kube-proxy except that invalid entries warn and, if nothing
// valid is left, close the LoadBalancer IPs instead of opening them.
func TestSourceRanges(t *testing.T) {
	tests := []struct {
		name           string
		ranges         []string
		lbIP           string
		wantFirewalled bool
		wantRanges     string
		wantProblems   int
	}{
		{"no field", nil, "172.18.255.1", false, "", 0},
		{"ranges are trimmed, masked and deduplicated", []string{" 10.1.2.3/16", "10.1.0.0/16", "192.0.2.1/32"}, "172.18.255.1", true, "10.1.0.0/16,192.0.2.1/32", 0},
		{"0.0.0.0/0 allows everyone", []string{"10.0.0.0/8", "0.0.0.0/0"}, "172.18.255.1", false, "", 0},
		{"leading zeros as the API server accepts them", []string{"010.000.0.0/8"}, "172.18.255.1", true, "10.0.0.0/8", 0},
		{"IPv6 ranges only: IPv4 side unrestricted, as kube-proxy", []string{"2001:db8::/32"}, "172.18.255.1", false, "", 0},
		{"an invalid entry is skipped with a warning", []string{"10.0.0.0/8", "nonsense"}, "172.18.255.1", true, "10.0.0.0/8", 1},
		{"only invalid entries: closed", []string{"nonsense"}, "172.18.255.1", true, "", 2},
		{"no LoadBalancer IP yet: nothing to firewall", []string{"10.0.0.0/8"}, "", false, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := makeService("ns", "s", "10.96.0.1", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.LoadBalancerSourceRanges = tc.ranges
				if tc.lbIP != "" {
					s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: tc.lbIP}}
				}
			})
			st := Compute(testInputs(svc))
			sp := st.ServicePorts[0]
			var got []string
			for _, p := range sp.SourceRanges {
				got = append(got, p.String())
			}
			if sp.Firewalled != tc.wantFirewalled || strings.Join(got, ",") != tc.wantRanges {
				t.Errorf("firewalled=%v ranges=%q, want %v %q", sp.Firewalled, strings.Join(got, ","), tc.wantFirewalled, tc.wantRanges)
			}
			if len(st.Problems) != tc.wantProblems {
				t.Errorf("problems = %+v, want %d", st.Problems, tc.wantProblems)
			}
			for _, p := range st.Problems {
				if p.Reason != "InvalidSourceRange" {
					t.Errorf("problem reason %q, want InvalidSourceRange", p.Reason)
				}
			}
		})
	}
}

// TestEndpointPickIsUniform: in every Service chain the cascade of numgen
// matches gives each endpoint the same probability and always picks one.
func TestEndpointPickIsUniform(t *testing.T) {
	objs := []any{}
	for _, c := range ruleCases() {
		objs = append(objs, c.objs...)
	}
	var five []ep
	for i := range 5 {
		five = append(five, ep{ip: fmt.Sprintf("10.244.3.%d", i+1), node: "node-c"})
	}
	objs = append(objs, makeService("ns1", "five", "10.96.0.140", nil), makeSlice("ns1", "five", "five-1", "http", v1.ProtocolTCP, 8080, five...))
	nft, _ := applyFull(t, testInputs(objs...))
	// A pick either DNATs (no affinity) or goes to an endpoint chain.
	reCascade := regexp.MustCompile(`^numgen random mod (\d+) == 0 (goto endpoint-\S+|meta l4proto \S+ dnat to \S+)$`)
	reLast := regexp.MustCompile(`^(goto endpoint-\S+|meta l4proto \S+ dnat to \S+)$`)
	checked := 0
	for name, ch := range nft.Table.Chains {
		if !strings.HasPrefix(name, prefixCluster) && !strings.HasPrefix(name, prefixLocal) {
			continue
		}
		p := map[string]float64{}
		left := 1.0
		for _, r := range ch.Rules {
			if m := reCascade.FindStringSubmatch(r.Rule); m != nil {
				k, _ := strconv.Atoi(m[1])
				p[m[2]] += left / float64(k)
				left *= float64(k-1) / float64(k)
			} else if m := reLast.FindStringSubmatch(r.Rule); m != nil {
				p[m[1]] += left
				left = 0
			}
		}
		if len(p) == 0 {
			continue
		}
		checked++
		if left > 1e-9 {
			t.Errorf("%s: %.3f of new connections pick no endpoint", name, left)
		}
		for ep, prob := range p {
			if math.Abs(prob-1/float64(len(p))) > 1e-9 {
				t.Errorf("%s: endpoint %s has probability %.4f, want 1/%d", name, ep, prob, len(p))
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked only %d Service chains", checked)
	}
}
