package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
)

// countingNFT counts transactions and fails the first failN of them.
type countingNFT struct {
	knftables.Interface
	runs  atomic.Int32
	failN atomic.Int32
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs.Add(1)
	if c.failN.Add(-1) >= 0 {
		return errors.New("injected nft failure")
	}
	return c.Interface.Run(ctx, tx)
}

// fakeConntrack applies each filter to a fixed list of flows and keeps the
// ones not matched, like the kernel table would.
type fakeConntrack struct {
	mu    sync.Mutex
	flows []*netlink.ConntrackFlow
	calls int
}

func (f *fakeConntrack) DeleteUDP(filter netlink.CustomConntrackFilter) (uint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	var keep []*netlink.ConntrackFlow
	n := uint(0)
	for _, fl := range f.flows {
		if filter.MatchConntrackFlow(fl) {
			n++
			continue
		}
		keep = append(keep, fl)
	}
	f.flows = keep
	return n, nil
}

func (f *fakeConntrack) remaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.flows)
}

func udpFlow(src, dst string, dport uint16, replySrc string, replyPort uint16) *netlink.ConntrackFlow {
	return &netlink.ConntrackFlow{
		Forward: netlink.IPTuple{Protocol: 17, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), SrcPort: 40000, DstPort: dport},
		Reverse: netlink.IPTuple{Protocol: 17, SrcIP: net.ParseIP(replySrc), DstIP: net.ParseIP(src), SrcPort: replyPort, DstPort: 40000},
	}
}

type harness struct {
	client *fake.Clientset
	nft    *countingNFT
	fake   *knftables.Fake
	ct     *fakeConntrack
	rec    *record.FakeRecorder
	p      *Proxier
}

func startProxier(t *testing.T, tweak func(*Config), objs ...any) *harness {
	t.Helper()
	h := &harness{
		client: fake.NewClientset(),
		fake:   knftables.NewFake(knftables.IPv4Family, TableName),
		ct:     &fakeConntrack{},
		rec:    record.NewFakeRecorder(100),
	}
	h.nft = &countingNFT{Interface: h.fake}
	for _, o := range objs {
		h.create(t, o)
	}
	cfg := Config{
		Client: h.client, NodeName: testNode, Zone: testZone,
		NodeIPs: []net.IP{net.ParseIP(testNodeIP.String())}, ClusterCIDR: testCIDR.String(),
		MinSyncInterval: 10 * time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Recorder: h.rec, NFT: h.nft, Conntrack: h.ct,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-p.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("proxier did not sync within 10s")
	}
	return h
}

func (h *harness) create(t *testing.T, o any) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch o := o.(type) {
	case *v1.Service:
		_, err = h.client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discovery.EndpointSlice:
		_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) verdict(mapName string, key ...string) string {
	elems, err := h.fake.ListElements(context.Background(), "map", mapName)
	if err != nil {
		return ""
	}
	for _, e := range elems {
		if strings.Join(e.Key, " . ") == strings.Join(key, " . ") {
			return e.Value[0]
		}
	}
	return ""
}

func TestProxierFollowsEndpointSlices(t *testing.T) {
	c := ruleCases()[0]
	h := startProxier(t, nil, c.objs...)
	if v := h.verdict(mapServiceIPs, "10.96.0.10", "tcp", "80"); v != "goto service-ns1/web/tcp/80" {
		t.Fatalf("service-ips[10.96.0.10 . tcp . 80] = %q after first sync", v)
	}
	if err := h.client.DiscoveryV1().EndpointSlices("ns1").Delete(context.Background(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ClusterIP rejected after its EndpointSlice is deleted", func() bool {
		return h.verdict(mapNoEndpointServices, "10.96.0.10", "tcp", "80") == "goto reject-chain" &&
			h.verdict(mapServiceIPs, "10.96.0.10", "tcp", "80") == ""
	})
	// The Service chain is flushed now and deleted a second later.
	eventually(t, "stale Service chain deleted", func() bool {
		h.p.loop.Mark()
		chains, _ := h.fake.List(context.Background(), "chain")
		for _, c := range chains {
			if strings.Contains(c, "ns1/web") {
				return false
			}
		}
		return true
	})
	if err := h.client.CoreV1().Services("ns1").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted Service forgotten", func() bool {
		return h.verdict(mapNoEndpointServices, "10.96.0.10", "tcp", "80") == ""
	})
	if s := h.p.Stats(); s.SyncFailures != 0 || s.Syncs < 2 {
		t.Errorf("stats = %+v, want >= 2 syncs and no failures", s)
	}
}

func TestProxierRetriesFailedApplyWithFullResync(t *testing.T) {
	c := ruleCases()[0]
	var nft *countingNFT
	h := startProxier(t, func(cfg *Config) {
		nft = cfg.NFT.(*countingNFT)
		nft.failN.Store(3)
	}, c.objs...)
	if s := h.p.Stats(); s.SyncFailures != 3 {
		t.Errorf("SyncFailures = %d, want 3", s.SyncFailures)
	}
	if v := h.verdict(mapServiceIPs, "10.96.0.10", "tcp", "80"); v == "" {
		t.Errorf("Service not programmed after retries")
	}
}

func TestProxierCoalescesBursts(t *testing.T) {
	h := startProxier(t, func(cfg *Config) { cfg.MinSyncInterval = 300 * time.Millisecond })
	before := h.nft.runs.Load()
	for i := range 40 {
		h.create(t, makeService("burst", fmt.Sprintf("s%d", i), fmt.Sprintf("10.96.1.%d", i+1), nil))
	}
	eventually(t, "all 40 Services programmed", func() bool {
		return h.verdict(mapNoEndpointServices, "10.96.1.40", "tcp", "80") != ""
	})
	time.Sleep(400 * time.Millisecond) // let a trailing sync, if any, run
	if n := h.nft.runs.Load() - before; n > 5 {
		t.Errorf("40 Service creations caused %d nft transactions; want them coalesced (<= 5)", n)
	}
}

func TestProxierWaitsBrieflyForANewServicesSlice(t *testing.T) {
	h := startProxier(t, func(cfg *Config) { cfg.NewServiceWait = 300 * time.Millisecond })

	// A new Service whose EndpointSlice follows inside the wait: one transaction for both.
	before := h.nft.runs.Load()
	h.create(t, makeService("ns1", "pair", "10.96.2.1", nil))
	time.Sleep(30 * time.Millisecond)
	h.create(t, makeSlice("ns1", "pair", "pair-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.244.1.10", node: testNode}))
	eventually(t, "Service and slice programmed", func() bool {
		return h.verdict(mapServiceIPs, "10.96.2.1", "tcp", "80") != ""
	})
	time.Sleep(400 * time.Millisecond)
	if n := h.nft.runs.Load() - before; n != 1 {
		t.Errorf("a Service and its slice 30 ms later took %d transactions, want 1", n)
	}
	if v := h.verdict(mapNoEndpointServices, "10.96.2.1", "tcp", "80"); v != "" {
		t.Errorf("the Service was rejected on the way (%q)", v)
	}

	// A Service whose slice never comes still gets its reject rule, after the wait.
	t0 := time.Now()
	h.create(t, makeService("ns1", "lonely", "10.96.2.2", nil))
	eventually(t, "Service without endpoints rejected", func() bool {
		return h.verdict(mapNoEndpointServices, "10.96.2.2", "tcp", "80") == "goto reject-chain"
	})
	if d := time.Since(t0); d < 250*time.Millisecond {
		t.Errorf("a Service without endpoints was programmed after %v, before the 300 ms wait", d)
	}

	// A Service whose slice already exists is programmed at once.
	h.create(t, makeSlice("ns1", "early", "early-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.244.1.11", node: testNode}))
	time.Sleep(50 * time.Millisecond)
	t0 = time.Now()
	h.create(t, makeService("ns1", "early", "10.96.2.3", nil))
	eventually(t, "Service with an existing slice programmed", func() bool {
		return h.verdict(mapServiceIPs, "10.96.2.3", "tcp", "80") != ""
	})
	if d := time.Since(t0); d > 200*time.Millisecond {
		t.Errorf("a Service whose slice existed waited %v", d)
	}
}

func TestProxierWarnsAboutUnprogrammableService(t *testing.T) {
	bad := makeService("ns1", "bad", "10.96.0.200", func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "icmp", Protocol: "ICMP", Port: 7})
	})
	good := ruleCases()[0].objs
	h := startProxier(t, nil, append([]any{bad}, good...)...)
	select {
	case ev := <-h.rec.Events:
		if !strings.HasPrefix(ev, "Warning UnsupportedProtocol") || !strings.Contains(ev, `"ICMP"`) {
			t.Errorf("event = %q, want a Warning UnsupportedProtocol about ICMP", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Warning event for the ICMP port")
	}
	// The bad Service's TCP port and the other Service still work.
	if h.verdict(mapNoEndpointServices, "10.96.0.200", "tcp", "80") == "" || h.verdict(mapServiceIPs, "10.96.0.10", "tcp", "80") == "" {
		t.Errorf("valid ports not programmed next to an invalid one")
	}
	// A persisting problem is not re-announced every sync.
	h.create(t, makeService("ns1", "other", "10.96.0.201", nil))
	eventually(t, "next sync", func() bool { return h.verdict(mapNoEndpointServices, "10.96.0.201", "tcp", "80") != "" })
	select {
	case ev := <-h.rec.Events:
		t.Errorf("repeated event: %q", ev)
	default:
	}
}

// TestProxierWarnsAboutInvalidSourceRange: a bad loadBalancerSourceRanges
// entry gets a Warning on that Service; its valid ranges and every other
// Service are still programmed.
func TestProxierWarnsAboutInvalidSourceRange(t *testing.T) {
	bad := makeService("ns1", "fw", "10.96.0.210", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8", "10.0.0.0/99"}
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.20"}}
	})
	good := ruleCases()[0].objs
	h := startProxier(t, nil, append([]any{bad}, good...)...)
	select {
	case ev := <-h.rec.Events:
		if !strings.HasPrefix(ev, "Warning InvalidSourceRange") || !strings.Contains(ev, `"10.0.0.0/99"`) {
			t.Errorf("event = %q, want a Warning InvalidSourceRange about 10.0.0.0/99", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Warning event for the invalid source range")
	}
	if v := h.verdict(mapFirewallIPs, "172.18.255.20", "tcp", "80"); v != "goto firewall-ns1/fw/tcp/80" {
		t.Errorf("firewall-ips[172.18.255.20 . tcp . 80] = %q, want the Service's firewall chain", v)
	}
	rules, err := h.fake.ListRules(context.Background(), "firewall-ns1/fw/tcp/80")
	if err != nil || len(rules) != 1 || rules[0].Rule != "ip saddr != { 10.0.0.0/8 } drop" {
		t.Errorf("firewall chain rules = %v (%v), want only the valid range", rules, err)
	}
	if h.verdict(mapServiceIPs, "10.96.0.10", "tcp", "80") == "" {
		t.Errorf("another Service is not programmed next to the invalid range")
	}
}

func TestProxierDeletesStaleUDPConntrack(t *testing.T) {
	c := ruleCases()[11] // UDP 10.96.0.100:53 -> 10.244.2.5:5353
	h := startProxier(t, nil, c.objs...)
	h.ct.mu.Lock()
	h.ct.flows = []*netlink.ConntrackFlow{
		udpFlow("10.244.1.9", "10.96.0.100", 53, "10.244.2.5", 5353),  // to the endpoint that goes away
		udpFlow("10.244.1.9", "10.96.0.100", 53, "10.244.3.7", 5353),  // to the endpoint that stays
		udpFlow("10.244.1.9", "10.244.2.5", 5353, "10.244.2.5", 5353), // direct pod traffic, not a Service
	}
	h.ct.mu.Unlock()
	// Replace the endpoint 10.244.2.5 by 10.244.3.7.
	sl := makeSlice("ns1", "multi", "multi-1", "dns", v1.ProtocolUDP, 5353, ep{ip: "10.244.3.7", node: "node-c"})
	if _, err := h.client.DiscoveryV1().EndpointSlices("ns1").Update(context.Background(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stale UDP flow deleted", func() bool { return h.ct.remaining() == 2 })
	h.ct.mu.Lock()
	defer h.ct.mu.Unlock()
	for _, f := range h.ct.flows {
		if f.Reverse.SrcIP.String() == "10.244.2.5" && f.Forward.DstIP.String() == "10.96.0.100" {
			t.Errorf("flow to the removed endpoint survived: %v", f)
		}
	}
}

func TestStaleUDPFilter(t *testing.T) {
	prev := Compute(testInputs(
		makeService("ns", "dns", "10.96.0.10", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053}}
		}),
		makeSlice("ns", "dns", "dns-1", "dns", v1.ProtocolUDP, 53, ep{ip: "10.244.1.2"}, ep{ip: "10.244.1.3"}),
		makeService("ns", "gone", "10.96.0.11", func(s *v1.Service) { s.Spec.Ports[0].Protocol = v1.ProtocolUDP }),
		makeSlice("ns", "gone", "gone-1", "http", v1.ProtocolUDP, 80, ep{ip: "10.244.1.4"}),
	))
	next := Compute(testInputs(
		makeService("ns", "dns", "10.96.0.10", func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeNodePort
			s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053}}
		}),
		makeSlice("ns", "dns", "dns-1", "dns", v1.ProtocolUDP, 53, ep{ip: "10.244.1.2"}),
	))
	f := newStaleUDPFilter(prev, next)
	tests := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"ClusterIP flow to removed endpoint", udpFlow("10.244.9.9", "10.96.0.10", 53, "10.244.1.3", 53), true},
		{"ClusterIP flow to kept endpoint", udpFlow("10.244.9.9", "10.96.0.10", 53, "10.244.1.2", 53), false},
		{"NodePort flow to removed endpoint", udpFlow("172.18.0.9", testNodeIP.String(), 30053, "10.244.1.3", 53), true},
		{"NodePort flow to kept endpoint", udpFlow("172.18.0.9", testNodeIP.String(), 30053, "10.244.1.2", 53), false},
		{"flow of a deleted Service", udpFlow("10.244.9.9", "10.96.0.11", 80, "10.244.1.4", 80), true},
		{"not DNATed", udpFlow("10.244.9.9", "10.96.0.10", 53, "10.96.0.10", 53), false},
		{"unrelated destination", udpFlow("10.244.9.9", "10.244.1.3", 53, "10.244.1.3", 53), false},
	}
	for _, tc := range tests {
		if got := f.MatchConntrackFlow(tc.flow); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
	tcp := udpFlow("10.244.9.9", "10.96.0.10", 53, "10.244.1.3", 53)
	tcp.Forward.Protocol = 6
	if f.MatchConntrackFlow(tcp) {
		t.Error("a TCP flow matched; TCP conntrack must never be touched")
	}
}

func TestHealthCheckNodePort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	svc := makeService("ns1", "etp", "10.96.0.70", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30083
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = int32(port)
	})
	slice := makeSlice("ns1", "etp", "etp-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.244.1.5", node: testNode}, ep{ip: "10.244.2.5", node: "node-b"})
	h := startProxier(t, func(c *Config) { c.HealthCheckBindIP = net.ParseIP("127.0.0.1") }, svc, slice)

	get := func() (int, healthResponse) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return 0, healthResponse{}
		}
		defer resp.Body.Close()
		var body healthResponse
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	eventually(t, "health check answers 200", func() bool { c, _ := get(); return c == http.StatusOK })
	_, body := get()
	if body.LocalEndpoints != 1 || body.Service.Namespace != "ns1" || body.Service.Name != "etp" || !body.ServiceProxyHealthy {
		t.Errorf("body = %+v, want ns1/etp with 1 local endpoint, healthy", body)
	}
	remote := makeSlice("ns1", "etp", "etp-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.244.2.5", node: "node-b"})
	if _, err := h.client.DiscoveryV1().EndpointSlices("ns1").Update(context.Background(), remote, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "health check answers 503 without local endpoints", func() bool { c, _ := get(); return c == http.StatusServiceUnavailable })
	if err := h.client.CoreV1().Services("ns1").Delete(context.Background(), "etp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "health check server stopped with its Service", func() bool { c, _ := get(); return c == 0 })
}
