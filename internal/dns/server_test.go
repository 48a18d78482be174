package dns

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// freePort returns a loopback port that was free a moment ago, for UDP and TCP.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		_ = pc.Close()
		if err == nil {
			_ = ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port")
	return ""
}

// startServer runs a Server on loopback against a fake API holding the
// cluster fixtures, and waits for /readyz.
func startServer(t *testing.T) (dnsAddr, healthURL string, client *fake.Clientset) {
	t.Helper()
	client = fake.NewClientset(clusterObjects()...)
	dnsAddr, healthAddr := freePort(t), freePort(t)
	s, err := New(Config{
		Source:       fakeSource(client),
		Listen:       dnsAddr,
		HealthListen: healthAddr,
		UDPSockets:   2,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	healthURL = "http://" + healthAddr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(healthURL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not OK within 10s (last err %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return dnsAddr, healthURL, client
}

func TestRunServesUDPAndTCPAndFollowsTheAPI(t *testing.T) {
	addr, _, client := startServer(t)
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(query("web.default.svc.cluster.local.", dns.TypeA), addr)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.20" {
			t.Errorf("%s: answer %v, want 10.96.0.20", proto, r.Answer)
		}
	}
	// Several queries on one TCP connection, as resolvers pipeline them.
	conn, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, name := range []string{"db.default.svc.cluster.local.", "_pg._tcp.db.default.svc.cluster.local."} {
		_ = conn.WriteMsg(query(name, dns.TypeSRV))
		r, err := conn.ReadMsg()
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Errorf("TCP %s: %v %v", name, r, err)
		}
	}

	// A new ready endpoint shows up in answers.
	es, err := client.DiscoveryV1().EndpointSlices("default").Get(context.Background(), "db-xyz", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := true
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.2.50"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(context.Background(), es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, _, err := c.Exchange(query("10-244-2-50.db.default.svc.cluster.local.", dns.TypeA), addr)
		if err == nil && len(r.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new endpoint not answered within 5s: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHealthUnderFlood floods the UDP port from many sockets and checks
// that /healthz and DNS itself keep answering.
func TestHealthUnderFlood(t *testing.T) {
	addr, healthURL, _ := startServer(t)
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	a, _ := query("web.default.svc.cluster.local.", dns.TypeA).Pack()
	nx, _ := query("nope.default.svc.cluster.local.", dns.TypeA).Pack()
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialUDP("udp", nil, raddr)
			if err != nil {
				return
			}
			defer c.Close()
			msg := a
			if i%2 == 1 {
				msg = nx
			}
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = c.Write(msg)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(200 * time.Millisecond)

	hc := &http.Client{Timeout: 2 * time.Second}
	for i := range 10 {
		start := time.Now()
		resp, err := hc.Get(healthURL + "/healthz")
		if err != nil {
			t.Fatalf("healthz %d under flood: %v", i, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz %d under flood: %s", i, resp.Status)
		}
		t.Logf("healthz %d under flood in %v", i, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	// UDP queries compete with the flood for the same socket buffers, so whether one gets
	// through depends on the machine's load; TCP has its own accept path and must keep answering.
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	var ok bool
	for range 5 {
		if r, _, err := c.Exchange(query("web.default.svc.cluster.local.", dns.TypeA), addr); err == nil && len(r.Answer) == 1 {
			ok = true
			break
		}
	}
	if !ok {
		t.Error("DNS did not answer a TCP client during the flood in 5 tries")
	}
}
