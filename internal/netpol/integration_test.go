package netpol

import (
	"knet/internal/netnsrun"

	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"
)

// nsNFT runs every knftables call inside the node's namespace, as the agent
// does when it runs there.
type nsNFT struct {
	ns    netns.NsHandle
	inner knftables.Interface
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

// testNode is a throwaway node: a network namespace with bridge knet0
// (10.244.1.1/24, br_netfilter on) and one namespace per pod hanging off it
// by a veth. No default route anywhere.
type testNode struct {
	t    *testing.T
	name string
	node netns.NsHandle
	pods map[string]netns.NsHandle // by pod IP
}

func privileged(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary")
	}
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newTestNode(t testing.TB, podIPs ...string) *testNode {
	b := make([]byte, 4)
	_, _ = crand.Read(b)
	n := &testNode{name: "knettest-netpol-" + hex.EncodeToString(b), pods: map[string]netns.NsHandle{}}
	addNS := func(name string) netns.NsHandle {
		ipCmd(t, "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Fatalf("open netns %s: %v", name, err)
		}
		t.Cleanup(func() { h.Close() })
		ipCmd(t, "-n", name, "link", "set", "lo", "up")
		return h
	}
	n.node = addNS(n.name)
	ipCmd(t, "-n", n.name, "link", "add", "knet0", "type", "bridge")
	ipCmd(t, "-n", n.name, "addr", "add", "10.244.1.1/24", "dev", "knet0")
	ipCmd(t, "-n", n.name, "link", "set", "knet0", "up")
	if out, err := exec.Command("ip", "netns", "exec", n.name, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").CombinedOutput(); err != nil {
		t.Skipf("br_netfilter unavailable in a new namespace: %v: %s", err, out)
	}
	for i, ip := range podIPs {
		pod := n.name + "-p" + string(rune('a'+i))
		n.pods[ip] = addNS(pod)
		veth := "veth" + string(rune('a'+i))
		ipCmd(t, "-n", n.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
		ipCmd(t, "-n", n.name, "link", "set", veth, "master", "knet0", "up")
		ipCmd(t, "-n", pod, "addr", "add", ip+"/24", "dev", "eth0")
		ipCmd(t, "-n", pod, "link", "set", "eth0", "up")
	}
	return n
}

// serve starts a TCP echo-greeting server on ip:port inside the pod's
// namespace: every connection gets "hello\n" and is closed.
func (n *testNode) serve(t testing.TB, ip, port string) {
	var ln net.Listener
	if err := netnsrun.Run(n.pods[ip], func() (err error) { ln, err = net.Listen("tcp", ip+":"+port); return err }); err != nil {
		t.Fatalf("listen in pod %s: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
}

// dial connects from ns to addr and reads the greeting: true means the
// SYN, the SYN-ACK (a reply) and the data all passed.
func dial(ns netns.NsHandle, addr string, timeout time.Duration) bool {
	var c net.Conn
	if err := netnsrun.Run(ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, timeout); return err }); err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "hello\n"
}

func testPod(name, ip string, labels map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, Labels: labels},
		Spec: v1.PodSpec{NodeName: "node-1", Containers: []v1.Container{{Name: "c", Ports: []v1.ContainerPort{
			{Name: "http", ContainerPort: 8080},
		}}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: ip},
	}
}

// TestPrivilegedEnforcement runs the controller against a real kernel: a
// policy blocks real connections, lets the allowed ones (and their
// replies) through, never blocks the node, and deleting it opens
// everything again.
func TestPrivilegedEnforcement(t *testing.T) {
	privileged(t)
	const a, b, c = "10.244.1.10", "10.244.1.11", "10.244.1.12"
	n := newTestNode(t, a, b, c)
	for _, ip := range []string{a, b, c} {
		n.serve(t, ip, "8080")
	}
	client := fake.NewClientset(
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}},
		testPod("a", a, map[string]string{"app": "a"}), testPod("b", b, map[string]string{"app": "b"}), testPod("c", c, map[string]string{"app": "c"}),
	)
	var inner knftables.Interface
	if err := netnsrun.Run(n.node, func() (err error) { inner, err = knftables.New(knftables.IPv4Family, TableName); return err }); err != nil {
		t.Fatalf("knftables in node namespace: %v", err)
	}
	ctl, err := New(Config{
		Client: client, NodeName: "node-1", PodCIDR: "10.244.1.0/24", NodeIPs: []net.IP{net.ParseIP("172.18.0.2")},
		NFT: &nsNFT{ns: n.node, inner: inner}, MinSyncInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runController(t, ctl)

	const wait = 300 * time.Millisecond
	probe := func(from netns.NsHandle, to string) bool { return dial(from, to+":8080", wait) }
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	if !probe(n.pods[c], a) || !probe(n.pods[a], b) {
		t.Fatal("pods cannot reach each other before any policy; the test network is broken")
	}

	// a accepts only b on the named port "http" (8080), and may send nothing.
	tcp := v1.ProtocolTCP
	pol := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromString("http"))}},
			}},
		},
	}
	if _, err := client.NetworkingV1().NetworkPolicies("x").Create(context.Background(), pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("c -> a is blocked", func() bool { return !probe(n.pods[c], a) })
	if probe(n.pods[a], b) {
		t.Error("a -> b passed; a's egress is denied")
	}
	if !probe(n.pods[b], a) {
		t.Error("b -> a blocked; the policy allows it (and a's replies must pass despite its egress deny)")
	}
	if !probe(n.node, a) {
		t.Error("node -> a blocked; traffic from the node to its pods always passes")
	}
	if !probe(n.pods[c], b) {
		t.Error("c -> b blocked; b is selected by no policy")
	}

	if err := client.NetworkingV1().NetworkPolicies("x").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("c -> a is allowed again", func() bool { return probe(n.pods[c], a) })
	if !probe(n.pods[a], b) {
		t.Error("a -> b still blocked after the policy was deleted")
	}
	if s := ctl.Stats(); s.SyncFailures != 0 {
		t.Errorf("%d syncs failed against the real kernel", s.SyncFailures)
	}
}

// TestPrivilegedKernelAcceptsRenderedTables applies the golden policies and
// a sequence of generated policy sets (prefixes, ranges, port ranges, every
// protocol) to a real kernel, incrementally, and checks that the kernel
// holds what was rendered.
func TestPrivilegedKernelAcceptsRenderedTables(t *testing.T) {
	privileged(t)
	n := newTestNode(t)
	var inner knftables.Interface
	if err := netnsrun.Run(n.node, func() (err error) { inner, err = knftables.New(knftables.IPv4Family, TableName); return err }); err != nil {
		t.Fatalf("knftables in node namespace: %v", err)
	}
	nft := &nsNFT{ns: n.node, inner: inner}
	pods, nss := makePods(), makeNamespaces()
	g := policyGen{rand.New(rand.NewPCG(3, 3))}
	var applied *ruleset
	for step := range 25 {
		policies := goldenPolicies()
		if step > 0 {
			policies = append(g.policies(), g.policies()...)
			for i, np := range policies {
				np.Name = np.Name + "-" + string(rune('a'+i))
			}
		}
		st := Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: "node-1", AlwaysAllowed: fixtureNodeIPs["node-1"]})
		next := render(st)
		tx := nft.NewTransaction()
		plan(tx, applied, next)
		if err := nft.Run(context.Background(), tx); err != nil {
			t.Fatalf("step %d: the kernel refused the rendered table: %v\n%s", step, err, fakeTable(t, "node-1", policies, pods, nss).Dump())
		}
		applied = next
		for name, s := range next.sets {
			typ := "set"
			if s.isMap() {
				typ = "map"
			}
			els, err := nft.ListElements(context.Background(), typ, name)
			if err != nil {
				t.Fatalf("step %d: list %s %s: %v", step, typ, name, err)
			}
			if len(els) != len(s.elems) {
				t.Fatalf("step %d: %s %s holds %d elements in the kernel, %d rendered", step, typ, name, len(els), len(s.elems))
			}
		}
		chains, err := nft.List(context.Background(), "chains")
		if err != nil || len(chains) != len(next.chains) {
			t.Fatalf("step %d: kernel has chains %v (err %v), rendered %d", step, chains, err, len(next.chains))
		}
	}
}
