package cluster

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// kernelState is what a user would compare before and after: links, named namespaces, routes.
func kernelState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-br", "link"}, {"netns", "list"}, {"route", "show", "table", "all"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
}

func TestUnderlaySetupAndTeardown(t *testing.T) {
	requireRoot(t)
	l, err := NewLayout("ut-underlay", 150, 2)
	if err != nil {
		t.Fatal(err)
	}
	before := kernelState(t)
	t.Cleanup(func() { _ = Teardown(l) })
	if err := SaveLayout(l); err != nil {
		t.Fatal(err)
	}
	if err := CheckAddressSpace(l); err != nil {
		t.Fatal(err)
	}
	if err := SetupUnderlay(l); err != nil {
		t.Fatal(err)
	}
	if err := SetupUnderlay(l); err != nil {
		t.Fatalf("second SetupUnderlay (idempotent) failed: %v", err)
	}
	// Node 1 reaches node 2 and the gateway over the underlay.
	for _, dst := range []string{l.Nodes[1].IP.String(), l.Gateway.String()} {
		out, err := exec.Command("ip", "netns", "exec", l.Nodes[0].Netns, "ping", "-c1", "-W1", dst).CombinedOutput()
		if err != nil {
			t.Errorf("ping %s from %s: %v\n%s", dst, l.Nodes[0].Name, err, out)
		}
	}
	// No default route inside a node: nothing can leave the underlay.
	out, _ := exec.Command("ip", "netns", "exec", l.Nodes[0].Netns, "ip", "route", "show", "default").CombinedOutput()
	if strings.TrimSpace(string(out)) != "" {
		t.Errorf("node namespace has a default route: %s", out)
	}
	// The host cannot reach Service IPs (guard route), instead of sending them out the uplink.
	out, _ = exec.Command("ip", "route", "get", "10.96.0.1").CombinedOutput()
	if !strings.Contains(string(out), "unreachable") && !strings.Contains(string(out), "No route to host") {
		t.Errorf("route to a Service IP from the host is %q, want unreachable", out)
	}
	// A pod address without a node route fails on the host instead of using the uplink.
	out, _ = exec.Command("ip", "route", "get", l.PodCIDR.Addr().Next().String()).CombinedOutput()
	if !strings.Contains(string(out), "unreachable") && !strings.Contains(string(out), "No route to host") {
		t.Errorf("route to an unrouted pod IP from the host is %q, want unreachable", out)
	}
	ns, err := netns.GetFromName(l.Nodes[1].Netns)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	// A process in the cluster cgroup dies with the cluster.
	cg, err := OpenCgroup(l.CgroupName())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "300")
	fd, err := cg.Into(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	if err := Teardown(l); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("process in the cluster cgroup survived Teardown")
		_ = cmd.Process.Kill()
	}
	if err := Teardown(l); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if after := kernelState(t); after != before {
		t.Errorf("kernel state changed by setup+teardown:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := os.Stat(l.Dir()); !os.IsNotExist(err) {
		t.Errorf("state dir %s left behind", l.Dir())
	}
}
