package podnet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func node(name, ip, cidr, mac string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	if cidr != "" {
		n.Spec.PodCIDR = cidr
		n.Spec.PodCIDRs = []string{cidr}
	}
	if mac != "" {
		n.Annotations[VTEPMACAnnotation] = mac
	}
	return n
}

func infos(nodes ...*corev1.Node) []nodeInfo {
	var out []nodeInfo
	for _, n := range nodes {
		out = append(out, nodeInfoFrom(n))
	}
	return out
}

func TestDesiredState(t *testing.T) {
	n1 := node("n1", "172.18.0.2", "10.244.1.0/24", "0e:6b:ac:12:00:02")
	n2 := node("n2", "172.18.0.3", "10.244.2.0/24", "0e:6b:ac:12:00:03")
	n3 := node("n3", "172.18.0.4", "10.244.3.0/24", "") // no VTEP MAC yet
	noCIDR := node("n4", "172.18.0.5", "", "")
	noIP := node("n5", "", "10.244.5.0/24", "")
	all := infos(n1, n2, n3, noCIDR, noIP)

	for _, tc := range []struct {
		name, self string
		mode       Mode
		link       string
		want       []string
	}{
		{"host-gw on a node routes the other nodes", "n1", ModeHostGW, "eth0", []string{
			"route 10.244.2.0/24 via 172.18.0.3 dev eth0",
			"route 10.244.3.0/24 via 172.18.0.4 dev eth0",
		}},
		{"host routes every node", "", ModeHostGW, "knet-br", []string{
			"route 10.244.1.0/24 via 172.18.0.2 dev knet-br",
			"route 10.244.2.0/24 via 172.18.0.3 dev knet-br",
			"route 10.244.3.0/24 via 172.18.0.4 dev knet-br",
		}},
		{"host in vxlan mode still routes via node IPs", "", ModeVXLAN, "knet-br", []string{
			"route 10.244.1.0/24 via 172.18.0.2 dev knet-br",
			"route 10.244.2.0/24 via 172.18.0.3 dev knet-br",
			"route 10.244.3.0/24 via 172.18.0.4 dev knet-br",
		}},
		{"vxlan: peers with a VTEP MAC get route, neighbor, fdb", "n1", ModeVXLAN, "eth0", []string{
			"fdb 172.18.0.3 0e:6b:ac:12:00:03 dev knet.vxlan",
			"neigh 10.244.2.0 0e:6b:ac:12:00:03 dev knet.vxlan",
			"route 10.244.2.0/24 via 10.244.2.0 dev knet.vxlan onlink",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			if _, err := apply(f, desiredState(tc.self, tc.mode, tc.link, all), tc.link, VXLANDevice); err != nil {
				t.Fatal(err)
			}
			if got, want := f.dump(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func newTestController(t *testing.T, self string, mode Mode, objs ...*corev1.Node) (*Controller, *fakeDataplane, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset()
	for _, o := range objs {
		if _, err := cs.CoreV1().Nodes().Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := newFake()
	c, err := newController(Config{Client: cs, NodeName: self, Mode: mode, Link: "eth0", Logger: quiet, MinSyncInterval: time.Millisecond}, f)
	if err != nil {
		t.Fatal(err)
	}
	return c, f, cs
}

func TestSecondSyncChangesNothingAndStaleRoutesGo(t *testing.T) {
	n1 := node("n1", "172.18.0.2", "10.244.1.0/24", "")
	n2 := node("n2", "172.18.0.3", "10.244.2.0/24", "")
	n3 := node("n3", "172.18.0.4", "10.244.3.0/24", "")
	c, f, _ := newTestController(t, "n1", ModeHostGW)
	// A leftover knet route from an earlier run, for a node that is gone.
	f.routes[netip.MustParsePrefix("10.244.9.0/24")] = Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Gw: netip.MustParseAddr("172.18.0.9"), Dev: "eth0"}
	// A route whose node IP changed.
	f.routes[netip.MustParsePrefix("10.244.2.0/24")] = Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("172.18.0.99"), Dev: "eth0"}
	ctx := context.Background()

	if err := c.syncNodes(ctx, infos(n1, n2, n3)); err != nil {
		t.Fatal(err)
	}
	want := "route 10.244.2.0/24 via 172.18.0.3 dev eth0\nroute 10.244.3.0/24 via 172.18.0.4 dev eth0"
	if got := f.dump(); got != want {
		t.Fatalf("after first sync:\n%s\nwant:\n%s", got, want)
	}
	before := f.mutations
	if err := c.syncNodes(ctx, infos(n1, n2, n3)); err != nil {
		t.Fatal(err)
	}
	if f.mutations != before {
		t.Fatalf("second sync with no change made %d changes", f.mutations-before)
	}
	// n3 leaves: its route goes, the other stays.
	if err := c.syncNodes(ctx, infos(n1, n2)); err != nil {
		t.Fatal(err)
	}
	if got := f.dump(); got != "route 10.244.2.0/24 via 172.18.0.3 dev eth0" {
		t.Fatalf("after node removal:\n%s", got)
	}
}

func TestApplyContinuesPastOneFailure(t *testing.T) {
	f := newFake()
	f.failNext = errors.New("boom")
	want := desiredState("n1", ModeHostGW, "eth0", infos(
		node("n2", "172.18.0.3", "10.244.2.0/24", ""), node("n3", "172.18.0.4", "10.244.3.0/24", "")))
	_, err := apply(f, want, "eth0", "")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("apply error = %v, want the injected failure", err)
	}
	if len(f.routes) != 1 {
		t.Fatalf("one failed route should not block the other: %s", f.dump())
	}
	if _, err := apply(f, want, "eth0", ""); err != nil {
		t.Fatal(err)
	}
	if len(f.routes) != 2 {
		t.Fatalf("retry did not converge: %s", f.dump())
	}
}

// TestApplyLeavesOtherLinksAlone: on the host, every cluster's daemon runs a controller for its
// own bridge; one must never delete the routes another installed (same protocol, other link).
func TestApplyLeavesOtherLinksAlone(t *testing.T) {
	f := newFake()
	other := Route{Dst: netip.MustParsePrefix("10.243.0.0/24"), Gw: netip.MustParseAddr("172.19.1.2"), Dev: "knet1"}
	if err := f.ReplaceRoute(other); err != nil {
		t.Fatal(err)
	}
	want := desiredState("", ModeHostGW, "knet0", infos(node("n1", "172.18.0.2", "10.244.1.0/24", "")))
	if _, err := apply(f, want, "knet0", ""); err != nil {
		t.Fatal(err)
	}
	got := f.dump()
	if !strings.Contains(got, "10.243.0.0/24 via 172.19.1.2 dev knet1") || !strings.Contains(got, "10.244.1.0/24 via 172.18.0.2 dev knet0") {
		t.Fatalf("routes after apply:\n%s", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunFollowsNodesAndPublishesVTEP(t *testing.T) {
	c, f, cs := newTestController(t, "n1", ModeVXLAN,
		node("n1", "172.18.0.2", "10.244.1.0/24", ""),
		node("n2", "172.18.0.3", "10.244.2.0/24", ""))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "own VTEP MAC annotation", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		return err == nil && n.Annotations[VTEPMACAnnotation] == "0e:6b:ac:12:00:02"
	})
	if strings.Contains(f.dump(), "route") {
		t.Fatalf("route to a peer without VTEP MAC:\n%s", f.dump())
	}
	// The peer publishes its MAC: route, neighbor and fdb follow.
	n2, _ := cs.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	n2.Annotations = map[string]string{VTEPMACAnnotation: "0e:6b:ac:12:00:03"}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "fdb 172.18.0.3 0e:6b:ac:12:00:03 dev knet.vxlan\nlink knet.vxlan\nneigh 10.244.2.0 0e:6b:ac:12:00:03 dev knet.vxlan\nroute 10.244.2.0/24 via 10.244.2.0 dev knet.vxlan onlink"
	waitFor(t, "vxlan state for n2", func() bool { return f.dump() == want })

	if err := cs.CoreV1().Nodes().Delete(ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "n2's entries removed", func() bool { return f.dump() == "link knet.vxlan" })
}

func TestConfigValidate(t *testing.T) {
	cs := fake.NewClientset()
	for _, c := range []Config{
		{Link: "eth0"},
		{Client: cs},
		{Client: cs, Link: "eth0", Mode: "ipip"},
	} {
		c.Defaults()
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
}
