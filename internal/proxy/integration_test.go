package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"

	"knet/internal/netnsrun"
	"knet/internal/nftsession"
)

// nsNFT runs every knftables call inside a network namespace, as the proxy
// does when `knet node` runs in the node's namespace. Transactions go through
// an nftsession, as the proxy's own do; Close ends its nft process.
type nsNFT struct {
	ns    netns.NsHandle
	inner *nftsession.Session
}

func newNSNFT(t testing.TB, ns netns.NsHandle) *nsNFT {
	t.Helper()
	n := &nsNFT{ns: ns}
	err := netnsrun.Run(ns, func() error {
		inner, err := knftables.New(knftables.IPv4Family, TableName)
		if err == nil {
			n.inner, err = nftsession.New(inner)
		}
		return err
	})
	if err != nil {
		t.Fatalf("nftables in namespace: %v", err)
	}
	t.Cleanup(func() { _ = n.inner.Close() })
	return n
}

func (n *nsNFT) NewTransaction() *knftables.Transaction { return n.inner.NewTransaction() }
func (n *nsNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	return netnsrun.Run(n.ns, func() error { return n.inner.Run(ctx, tx) })
}
func (n *nsNFT) Check(ctx context.Context, tx *knftables.Transaction) error {
	return netnsrun.Run(n.ns, func() error { return n.inner.Check(ctx, tx) })
}
func (n *nsNFT) List(ctx context.Context, t string) (out []string, err error) {
	err = netnsrun.Run(n.ns, func() error { out, err = n.inner.List(ctx, t); return err })
	return
}
func (n *nsNFT) ListAll(ctx context.Context) (out map[string][]string, err error) {
	err = netnsrun.Run(n.ns, func() error { out, err = n.inner.ListAll(ctx); return err })
	return
}
func (n *nsNFT) ListRules(ctx context.Context, c string) (out []*knftables.Rule, err error) {
	err = netnsrun.Run(n.ns, func() error { out, err = n.inner.ListRules(ctx, c); return err })
	return
}
func (n *nsNFT) ListElements(ctx context.Context, t, name string) (out []*knftables.Element, err error) {
	err = netnsrun.Run(n.ns, func() error { out, err = n.inner.ListElements(ctx, t, name); return err })
	return
}
func (n *nsNFT) ListCounters(ctx context.Context) (out []*knftables.Counter, err error) {
	err = netnsrun.Run(n.ns, func() error { out, err = n.inner.ListCounters(ctx); return err })
	return
}

type testNet struct {
	prefix           string
	node, podA, podB netns.NsHandle
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// setupNet builds: a "node" namespace with bridge kbr0 10.244.1.1/24,
// ip_forward on and a route for the Service range onto the bridge; two
// "pod" namespaces (10.244.1.10, 10.244.1.11) on the bridge with a route to
// the Service range via the bridge. No default route anywhere. Everything
// is removed by t.Cleanup, also on failure.
func setupNet(t testing.TB) *testNet {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	tn := &testNet{prefix: "knettest-proxy-" + id}
	names := map[string]*netns.NsHandle{"node": &tn.node, "a": &tn.podA, "b": &tn.podB}
	for _, suffix := range []string{"node", "a", "b"} {
		name := tn.prefix + "-" + suffix
		ipCmd(t, "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		*names[suffix] = h
	}
	node := tn.prefix + "-node"
	ipCmd(t, "-n", node, "link", "set", "lo", "up")
	ipCmd(t, "-n", node, "link", "add", "kbr0", "type", "bridge")
	ipCmd(t, "-n", node, "addr", "add", "10.244.1.1/24", "dev", "kbr0")
	ipCmd(t, "-n", node, "link", "set", "kbr0", "up")
	ipCmd(t, "-n", node, "route", "add", "10.96.0.0/12", "dev", "kbr0")
	for _, kv := range [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/bridge/bridge-nf-call-iptables", "1"}} {
		if err := netnsrun.Run(tn.node, func() error { return os.WriteFile("/proc/sys/"+kv[0], []byte(kv[1]), 0o644) }); err != nil {
			t.Fatalf("sysctl %s in node namespace: %v", kv[0], err)
		}
	}
	for i, p := range []struct{ suffix, ip string }{{"a", "10.244.1.10"}, {"b", "10.244.1.11"}} {
		pod := tn.prefix + "-" + p.suffix
		host := fmt.Sprintf("kv%s%d", id, i)
		ipCmd(t, "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod)
		ipCmd(t, "-n", node, "link", "set", host, "master", "kbr0", "up")
		// As knet's CNI plugin does: a pod reaching itself through its
		// Service leaves and re-enters the bridge on the same port.
		ipCmd(t, "-n", node, "link", "set", host, "type", "bridge_slave", "hairpin", "on")
		ipCmd(t, "-n", pod, "link", "set", "lo", "up")
		ipCmd(t, "-n", pod, "addr", "add", p.ip+"/24", "dev", "eth0")
		ipCmd(t, "-n", pod, "link", "set", "eth0", "up")
		ipCmd(t, "-n", pod, "route", "add", "10.96.0.0/12", "via", "10.244.1.1")
	}
	return tn
}

// serveTCP starts, in ns, a TCP server on :8080 that greets with name and
// then echoes lines.
func serveTCP(t testing.TB, ns netns.NsHandle, name string) {
	var ln net.Listener
	if err := netnsrun.Run(ns, func() (err error) { ln, err = net.Listen("tcp4", ":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// serveUDP starts, in ns, a UDP server on :5353 that answers every packet
// with name.
func serveUDP(t *testing.T, ns netns.NsHandle, name string) {
	var pc net.PacketConn
	if err := netnsrun.Run(ns, func() (err error) { pc, err = net.ListenPacket("udp4", ":5353"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			_, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name), addr)
		}
	}()
}

// dialTCP connects from ns to addr and returns the greeting and the conn.
func dialTCP(ns netns.NsHandle, addr string) (string, net.Conn, error) {
	var c net.Conn
	if err := netnsrun.Run(ns, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 2*time.Second); return err }); err != nil {
		return "", nil, err
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return "", nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return strings.TrimSpace(line), c, nil
}

func startNSProxier(t testing.TB, tn *testNet, client *fake.Clientset) (p *Proxier, nft *nsNFT, stop func()) {
	t.Helper()
	nft = newNSNFT(t, tn.node)
	h, err := netlink.NewHandleAt(tn.node)
	if err != nil {
		t.Fatal(err)
	}
	p, err = New(Config{
		Client: client, NodeName: testNode, ClusterCIDR: "10.244.0.0/16",
		NodeIPs: []net.IP{net.ParseIP("10.244.1.1")}, MinSyncInterval: 20 * time.Millisecond,
		Recorder: record.NewFakeRecorder(100), NFT: nft, Conntrack: NetlinkConntrack{Handle: h},
		Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		h.Close()
	}
	t.Cleanup(stop)
	select {
	case <-p.Synced():
	case <-time.After(20 * time.Second):
		t.Fatalf("proxier did not sync; failures=%d", p.Stats().SyncFailures)
	}
	if p.Stats().SyncFailures != 0 {
		t.Errorf("sync failures against real nftables: %d", p.Stats().SyncFailures)
	}
	return p, nft, stop
}

// testLogger discards logs unless KNET_TEST_PROXY_DEBUG is set, which
// prints debug logs (event and sync timings) to stderr.
func testLogger() *slog.Logger {
	if os.Getenv("KNET_TEST_PROXY_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestIntegrationClusterIPOverRealNftables(t *testing.T) {
	tn := setupNet(t)
	serveTCP(t, tn.podA, "pod-a")
	serveTCP(t, tn.podB, "pod-b")
	client := fake.NewClientset(
		makeService("ns1", "web", "10.96.0.10", nil),
		makeSlice("ns1", "web", "web-1", "http", v1.ProtocolTCP, 8080,
			ep{ip: "10.244.1.10", node: testNode}, ep{ip: "10.244.1.11", node: testNode}),
	)
	_, _, stop := startNSProxier(t, tn, client)

	// From pod A: both backends are reached, including pod A itself (hairpin).
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		name, c, err := dialTCP(tn.podA, "10.96.0.10:80")
		if err != nil {
			t.Fatalf("pod A -> ClusterIP: %v", err)
		}
		c.Close()
		seen[name] = true
	}
	if !seen["pod-a"] || !seen["pod-b"] {
		t.Errorf("pod A reached %v through the ClusterIP, want both pod-a (hairpin) and pod-b", seen)
	}
	// From the node itself.
	name, established, err := dialTCP(tn.node, "10.96.0.10:80")
	if err != nil || (name != "pod-a" && name != "pod-b") {
		t.Fatalf("node -> ClusterIP: %q, %v", name, err)
	}
	defer established.Close()

	// A proxy restart (a new Proxier rewriting the table) keeps the
	// established connection.
	stop()
	p, nft, _ := startNSProxier(t, tn, client)
	rd := bufio.NewReader(established)
	_ = established.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(established, "still there\n"); err != nil {
		t.Fatalf("write on established connection after restart: %v", err)
	}
	if line, err := rd.ReadString('\n'); err != nil || line != "still there\n" {
		t.Errorf("established connection after proxy restart: got %q, %v", line, err)
	}

	// Without endpoints, the ClusterIP refuses connections (REJECT, not a timeout).
	if err := client.DiscoveryV1().EndpointSlices("ns1").Delete(context.Background(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, from := range []struct {
		name string
		ns   netns.NsHandle
	}{{"pod B", tn.podB}, {"node", tn.node}} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, c, err := dialTCP(from.ns, "10.96.0.10:80")
			if err == nil {
				c.Close()
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s -> ClusterIP without endpoints: got %v, want connection refused", from.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The flushed Service chain is deleted by a later sync.
	time.Sleep(staleChainGrace)
	if _, err := client.CoreV1().Services("ns1").Create(context.Background(), makeService("ns1", "other", "10.96.0.99", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		chains, err := nft.List(context.Background(), "chain")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(chains, " "), "ns1/web") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale chains of ns1/web still in the kernel: %v", chains)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := p.Stats().SyncFailures; n != 0 {
		t.Errorf("%d sync failures against real nftables", n)
	}
}

func TestIntegrationUDPConntrackCleanup(t *testing.T) {
	tn := setupNet(t)
	serveUDP(t, tn.podA, "pod-a")
	serveUDP(t, tn.podB, "pod-b")
	dns := func(ip string) *discovery.EndpointSlice {
		return makeSlice("ns1", "dns", "dns-1", "dns", v1.ProtocolUDP, 5353, ep{ip: ip, node: testNode})
	}
	svc := makeService("ns1", "dns", "10.96.0.11", func(s *v1.Service) {
		s.Spec.Ports = []v1.ServicePort{{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53}}
	})
	client := fake.NewClientset(svc, dns("10.244.1.10"))
	p, _, _ := startNSProxier(t, tn, client)

	// One client socket, so every packet has the same 5-tuple and the same
	// conntrack entry, like a long-lived DNS client.
	var conn net.Conn
	if err := netnsrun.Run(tn.node, func() (err error) { conn, err = net.Dial("udp4", "10.96.0.11:53"); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func() string {
		_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := conn.Write([]byte("q")); err != nil {
			return "write: " + err.Error()
		}
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil {
			return "read: " + err.Error()
		}
		return string(buf[:n])
	}
	if got := ask(); got != "pod-a" {
		t.Fatalf("first answer %q, want pod-a", got)
	}
	// Move the endpoint to pod B; pod A keeps answering, so only the
	// conntrack cleanup can move this flow.
	if _, err := client.DiscoveryV1().EndpointSlices("ns1").Update(context.Background(), dns("10.244.1.11"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	got := ""
	for got != "pod-b" && time.Now().Before(deadline) {
		got = ask()
		time.Sleep(50 * time.Millisecond)
	}
	if got != "pod-b" {
		t.Errorf("UDP flow still answered by %q after its endpoint moved to pod B; stale conntrack entry not deleted", got)
	}
	if n := p.Stats().SyncFailures; n != 0 {
		t.Errorf("%d sync failures against real nftables", n)
	}
}

// TestIntegrationSourceRangesOverRealNftables: the kernel accepts the
// firewall rules, a client inside loadBalancerSourceRanges reaches the
// LoadBalancer IP, one outside times out (dropped), and changing the field
// moves the permission.
func TestIntegrationSourceRangesOverRealNftables(t *testing.T) {
	tn := setupNet(t)
	serveTCP(t, tn.podA, "pod-a")
	serveTCP(t, tn.podB, "pod-b")
	const lbIP = "10.99.0.1" // routed to the node by the pods' Service-range route
	svc := makeService("ns1", "fw", "10.96.0.10", func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerSourceRanges = []string{"10.244.1.10/32"}
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: lbIP}}
	})
	client := fake.NewClientset(svc,
		makeSlice("ns1", "fw", "fw-1", "http", v1.ProtocolTCP, 8080,
			ep{ip: "10.244.1.10", node: testNode}, ep{ip: "10.244.1.11", node: testNode}))
	startNSProxier(t, tn, client)

	reach := func(ns netns.NsHandle) error {
		_, c, err := dialTCP(ns, lbIP+":80")
		if err == nil {
			c.Close()
		}
		return err
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for: %s", what)
			}
		}
	}
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	if err := reach(tn.podA); err != nil {
		t.Fatalf("pod A (in the range) -> LoadBalancer IP: %v", err)
	}
	if err := reach(tn.podB); !isTimeout(err) {
		t.Fatalf("pod B (outside the range) -> LoadBalancer IP: %v, want a timeout (dropped)", err)
	}
	// The ClusterIP of the same Service is not restricted.
	if _, c, err := dialTCP(tn.podB, "10.96.0.10:80"); err != nil {
		t.Fatalf("pod B -> ClusterIP: %v", err)
	} else {
		c.Close()
	}

	svc.Spec.LoadBalancerSourceRanges = []string{"10.244.1.11/32"}
	if _, err := client.CoreV1().Services("ns1").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("pod B allowed after the ranges change", func() bool { return reach(tn.podB) == nil })
	if err := reach(tn.podA); !isTimeout(err) {
		t.Fatalf("pod A (now outside the range) -> LoadBalancer IP: %v, want a timeout", err)
	}

	svc.Spec.LoadBalancerSourceRanges = nil
	if _, err := client.CoreV1().Services("ns1").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("pod A allowed after the field is removed", func() bool { return reach(tn.podA) == nil })
}
