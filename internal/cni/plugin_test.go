package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"
)

func TestAddCheckDelRoundTrip(t *testing.T) {
	node := newNS(t, "node")
	pod := newNS(t, "pod")
	dataDir := t.TempDir()
	conf := pluginConf(t, confOpts{cidr: "10.244.1.0/24", dataDir: dataDir})
	a := args("round-trip-1", pod, conf)

	res, err := add(t, node, a)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 2 {
		t.Fatalf("result IPs = %+v, want one IP on interface index 2", res.IPs)
	}
	podIP := res.IPs[0].Address
	if !netip.MustParsePrefix("10.244.1.0/24").Contains(netip.MustParseAddr(podIP.IP.String())) || podIP.IP.String() == "10.244.1.1" {
		t.Fatalf("pod IP %s not a pod address of 10.244.1.0/24", podIP.String())
	}
	if res.IPs[0].Gateway.String() != "10.244.1.1" {
		t.Errorf("gateway = %s, want 10.244.1.1", res.IPs[0].Gateway)
	}
	if got := res.Interfaces[2]; got.Name != "eth0" || got.Sandbox != pod.Path() || got.Mac == "" {
		t.Errorf("pod interface in result = %+v", got)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("routes = %+v, want the default route", res.Routes)
	}

	// What a user checks with `ip` in the pod.
	addrOut := pod.mustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(addrOut, podIP.String()) {
		t.Errorf("eth0 in pod: %q, want %s", addrOut, podIP.String())
	}
	if out := pod.mustRun(t, "ip", "route", "show", "default"); !strings.Contains(out, "via 10.244.1.1 dev eth0") {
		t.Errorf("pod default route: %q", out)
	}
	if out := pod.mustRun(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Errorf("lo in pod not up: %q", out)
	}
	// ... and in the node.
	if out := node.mustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "knet0"); !strings.Contains(out, "10.244.1.1/24") {
		t.Errorf("bridge address: %q", out)
	}
	hostName := res.Interfaces[1].Name
	if out := node.mustRun(t, "ip", "-d", "-o", "link", "show", hostName); !strings.Contains(out, "master knet0") || !strings.Contains(out, "hairpin on") {
		t.Errorf("host veth: %q, want master knet0 and hairpin on", out)
	}
	for _, s := range []string{"net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"} {
		if out := node.mustRun(t, "sysctl", "-n", s); strings.TrimSpace(out) != "1" {
			t.Errorf("%s = %q in node, want 1", s, out)
		}
	}

	check := args("round-trip-1", pod, withPrevResult(t, conf, res))
	if err := node.Do(func(ns.NetNS) error { return testPlugin.Check(check) }); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}

	// A route removed by someone else is what CHECK exists to notice.
	pod.mustRun(t, "ip", "route", "del", "default")
	if err := node.Do(func(ns.NetNS) error { return testPlugin.Check(check) }); err == nil {
		t.Fatal("CHECK passed with the default route missing")
	}

	if err := del(t, node, a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if out, err := pod.run("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("eth0 still in pod after DEL: %s", out)
	}
	if out, err := node.run("ip", "link", "show", hostName); err == nil {
		t.Errorf("host veth still in node after DEL: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, podIP.IP.String())); !os.IsNotExist(err) {
		t.Errorf("IP reservation still on disk after DEL (err %v)", err)
	}
	if err := node.Do(func(ns.NetNS) error { return testPlugin.Check(check) }); err == nil {
		t.Error("CHECK passed after DEL")
	}
	if err := del(t, node, a); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
}

func TestDelUnknownContainerAndMissingNetns(t *testing.T) {
	node := newNS(t, "node")
	pod := newNS(t, "pod")
	conf := pluginConf(t, confOpts{cidr: "10.244.2.0/24", dataDir: t.TempDir()})
	if err := del(t, node, args("never-added", pod, conf)); err != nil {
		t.Fatalf("DEL of unknown container: %v", err)
	}
	a := args("gone-netns", pod, conf)
	a.Netns = "/var/run/netns/knettest-cni-does-not-exist"
	if err := del(t, node, a); err != nil {
		t.Fatalf("DEL with missing netns: %v", err)
	}
	a.Netns = ""
	if err := del(t, node, a); err != nil {
		t.Fatalf("DEL with empty netns: %v", err)
	}

	// A pod whose netns was deleted before DEL: the address must still be freed.
	pod2 := newNS(t, "pod")
	dataDir := t.TempDir()
	conf2 := pluginConf(t, confOpts{cidr: "10.244.2.0/24", dataDir: dataDir})
	res, err := add(t, node, args("netns-deleted", pod2, conf2))
	if err != nil {
		t.Fatal(err)
	}
	a2 := args("netns-deleted", pod2, conf2)
	a2.Netns = "/var/run/netns/knettest-cni-removed-" + randHex(3)
	if err := del(t, node, a2); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, res.IPs[0].Address.IP.String())); !os.IsNotExist(err) {
		t.Errorf("reservation survived DEL with a missing netns")
	}
}

func TestConcurrentAddsGetDistinctIPs(t *testing.T) {
	node := newNS(t, "node")
	conf := pluginConf(t, confOpts{cidr: "10.244.3.0/24", dataDir: t.TempDir()})
	const n = 50
	pods := make([]*testNS, n)
	for i := range pods {
		pods[i] = newNS(t, fmt.Sprintf("p%d", i))
	}
	results := make([]*current.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = add(t, node, args(fmt.Sprintf("conc-%02d", i), pods[i], conf))
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		ip := results[i].IPs[0].Address.IP.String()
		if j, dup := seen[ip]; dup {
			t.Fatalf("IP %s given to pods %d and %d", ip, j, i)
		}
		seen[ip] = i
		// The address reported is the one configured in that pod.
		if out := pods[i].mustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, " "+ip+"/24") {
			t.Fatalf("pod %d: result says %s, eth0 has %q", i, ip, out)
		}
	}
	for i := 0; i < n; i++ {
		if err := del(t, node, args(fmt.Sprintf("conc-%02d", i), pods[i], conf)); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	if out := node.mustRun(t, "ip", "-o", "link", "show", "master", "knet0"); strings.TrimSpace(out) != "" {
		t.Errorf("veths left on the bridge after DEL: %s", out)
	}
}

func TestExhaustionIsAPermanentErrorAndRollsBack(t *testing.T) {
	node := newNS(t, "node")
	dataDir := t.TempDir()
	conf := pluginConf(t, confOpts{cidr: "10.244.4.0/29", dataDir: dataDir})
	for i := 0; i < 5; i++ { // a /29 has 6 host addresses, one is the gateway
		if _, err := add(t, node, args(fmt.Sprintf("full-%d", i), newNS(t, "pod"), conf)); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	pod := newNS(t, "pod")
	_, err := add(t, node, args("one-too-many", pod, conf))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		t.Fatalf("want a CNI error, got %v", err)
	}
	if cniErr.Code != types.ErrInternal {
		t.Errorf("code = %d, want %d (not 11: retrying cannot help)", cniErr.Code, types.ErrInternal)
	}
	for _, want := range []string{"10.244.4.0/29", "delete pods", "larger podCIDR"} {
		if !strings.Contains(cniErr.Msg, want) {
			t.Errorf("message %q does not mention %q", cniErr.Msg, want)
		}
	}
	if out, err := pod.run("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("failed ADD left eth0 in the pod: %s", out)
	}
	if _, err := node.run("ip", "link", "show", hostVethName("one-too-many", "eth0")); err == nil {
		t.Error("failed ADD left a host veth")
	}
}

func TestRollbackOnHostPortConflict(t *testing.T) {
	node := newNS(t, "node")
	dataDir := t.TempDir()
	ports := []PortMapping{{HostPort: 18080, ContainerPort: 80, Protocol: "tcp"}}
	conf := pluginConf(t, confOpts{cidr: "10.244.5.0/24", dataDir: dataDir, ports: ports})
	if _, err := add(t, node, args("first", newNS(t, "pod"), conf)); err != nil {
		t.Fatal(err)
	}
	pod := newNS(t, "pod")
	_, err := add(t, node, args("second", pod, conf))
	if err == nil || !strings.Contains(err.Error(), "already used by container first") {
		t.Fatalf("second pod on the same hostPort: err = %v", err)
	}
	entries, _ := os.ReadDir(dataDir)
	reserved := 0
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			reserved++
		}
	}
	if reserved != 1 {
		t.Errorf("%d reservations after a failed ADD, want 1 (only the first pod)", reserved)
	}
	if _, err := pod.run("ip", "link", "show", "eth0"); err == nil {
		t.Error("failed ADD left eth0 in the pod")
	}
}

// listenInPod starts a TCP server in the pod that answers with its name.
func listenInPod(t *testing.T, pod *testNS, port int, reply string) {
	t.Helper()
	var l net.Listener
	err := pod.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, reply)
			c.Close()
		}
	}()
}

func dialFrom(n *testNS, addr string) (string, error) {
	var got string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

func TestHostPortReachesPod(t *testing.T) {
	node := newNS(t, "node")
	client := newNS(t, "client")
	// The node's underlay address, and a client on the underlay through a veth.
	vethA, vethB := "kt-n-"+randHex(3), "kt-c-"+randHex(3)
	node.mustRun(t, "ip", "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", client.name)
	node.mustRun(t, "ip", "addr", "add", "172.31.0.2/24", "dev", vethA)
	node.mustRun(t, "ip", "link", "set", vethA, "up")
	client.mustRun(t, "ip", "addr", "add", "172.31.0.9/24", "dev", vethB)
	client.mustRun(t, "ip", "link", "set", vethB, "up")
	client.mustRun(t, "ip", "link", "set", "lo", "up")

	dataDir := t.TempDir()
	pod := newNS(t, "pod")
	ports := []PortMapping{{HostPort: 18081, ContainerPort: 8080, Protocol: "tcp"}}
	conf := pluginConf(t, confOpts{cidr: "10.244.6.0/24", dataDir: dataDir, ports: ports})
	a := args("hostport-pod", pod, conf)
	if _, err := add(t, node, a); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	t.Cleanup(func() { del(t, node, a) })
	listenInPod(t, pod, 8080, "hello from pod")

	if got, err := dialFrom(client, "172.31.0.2:18081"); err != nil || got != "hello from pod" {
		t.Fatalf("client -> node:hostPort: %q, %v", got, err)
	}
	if got, err := dialFrom(node, "172.31.0.2:18081"); err != nil || got != "hello from pod" {
		t.Fatalf("node -> own address:hostPort: %q, %v", got, err)
	}
	if out := node.mustRun(t, "nft", "list", "map", "inet", HostPortTable, "hostports"); !strings.Contains(out, `comment "hostport-pod"`) {
		t.Errorf("hostPort element not tagged with the container ID:\n%s", out)
	}

	if err := del(t, node, a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if out := node.mustRun(t, "nft", "list", "map", "inet", HostPortTable, "hostports"); strings.Contains(out, "18081") {
		t.Errorf("hostPort entry survived DEL:\n%s", out)
	}
	if _, err := dialFrom(client, "172.31.0.2:18081"); err == nil {
		t.Error("hostPort still reachable after DEL")
	}
}

func TestTwoPodsOnOneBridge(t *testing.T) {
	node := newNS(t, "node")
	conf := pluginConf(t, confOpts{cidr: "10.244.7.0/24", dataDir: t.TempDir()})
	podA, podB := newNS(t, "pa"), newNS(t, "pb")
	ra, err := add(t, node, args("pod-a", podA, conf))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := add(t, node, args("pod-b", podB, conf))
	if err != nil {
		t.Fatal(err)
	}
	ipB := rb.IPs[0].Address.IP.String()
	if out, err := podA.run("ping", "-c", "1", "-W", "2", ipB); err != nil {
		t.Fatalf("pod A -> pod B (%s): %v\n%s", ipB, err, out)
	}
	if out, err := podB.run("ping", "-c", "1", "-W", "2", ra.IPs[0].Address.IP.String()); err != nil {
		t.Fatalf("pod B -> pod A: %v\n%s", err, out)
	}
	if out, err := podA.run("ping", "-c", "1", "-W", "2", "10.244.7.1"); err != nil {
		t.Fatalf("pod A -> gateway: %v\n%s", err, out)
	}
	listenInPod(t, podB, 9000, "b")
	if got, err := dialFrom(podA, ipB+":9000"); err != nil || got != "b" {
		t.Fatalf("TCP pod A -> pod B: %q %v", got, err)
	}
}

func TestGCFreesInvalidAttachments(t *testing.T) {
	node := newNS(t, "node")
	dataDir := t.TempDir()
	var ips []string
	for i, hp := range []int{18090, 18091, 18092} {
		conf := pluginConf(t, confOpts{cidr: "10.244.8.0/24", dataDir: dataDir,
			ports: []PortMapping{{HostPort: hp, ContainerPort: 80}}})
		res, err := add(t, node, args(fmt.Sprintf("gc-%d", i), newNS(t, "pod"), conf))
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, res.IPs[0].Address.IP.String())
	}
	t.Cleanup(func() { node.run("nft", "delete", "table", "inet", HostPortTable) })
	conf := pluginConf(t, confOpts{cidr: "10.244.8.0/24", dataDir: dataDir,
		extra: map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": "gc-1", "ifname": "eth0"}}}})
	a := &skel.CmdArgs{StdinData: conf} // GC carries no container, netns or ifname
	if err := node.Do(func(ns.NetNS) error { return testPlugin.GC(a) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	for i, ip := range ips {
		_, err := os.Stat(filepath.Join(dataDir, ip))
		if (i == 1) != (err == nil) {
			t.Errorf("after GC keeping gc-1: reservation of gc-%d (%s) exists=%v", i, ip, err == nil)
		}
	}
	out := node.mustRun(t, "nft", "list", "map", "inet", HostPortTable, "hostports")
	if !strings.Contains(out, "18091") || strings.Contains(out, "18090") || strings.Contains(out, "18092") {
		t.Errorf("after GC the hostPort map should hold only gc-1's 18091:\n%s", out)
	}
}

func TestStatus(t *testing.T) {
	p := testPlugin
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		name string
		conf []byte
		code uint // 0 = ready
	}{
		{"ready", pluginConf(t, confOpts{cidr: "10.244.0.0/24", dataDir: t.TempDir()}), 0},
		{"no podCIDR", pluginConf(t, confOpts{dataDir: t.TempDir()}), types.ErrPluginNotAvailable},
		{"data dir not writable", pluginConf(t, confOpts{cidr: "10.244.0.0/24", dataDir: filepath.Join(file, "sub")}), types.ErrPluginNotAvailable},
		{"garbage", []byte("{not json"), types.ErrDecodingFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Status(&skel.CmdArgs{StdinData: tc.conf})
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				return
			}
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != tc.code {
				t.Fatalf("STATUS = %v, want CNI error code %d", err, tc.code)
			}
		})
	}
}

func TestMalformedConfigIsACNIError(t *testing.T) {
	p := testPlugin
	for _, data := range []string{"", "{", `{"name":"knet","type":"knet","podCIDR":42}`, `{"name":"knet","podCIDR":"not-a-cidr"}`,
		`{"name":"knet","podCIDR":"10.0.0.0/24","mtu":-1}`, `{"name":"knet","podCIDR":"10.0.0.0/24","runtimeConfig":{"portMappings":[{"hostPort":0}]}}`} {
		a := &skel.CmdArgs{ContainerID: "x", IfName: "eth0", Netns: "/nonexistent", StdinData: []byte(data)}
		for name, fn := range map[string]func() error{
			"ADD":   func() error { _, err := p.Add(a); return err },
			"DEL":   func() error { return p.Del(a) },
			"CHECK": func() error { return p.Check(a) },
			"GC":    func() error { return p.GC(a) },
		} {
			err := fn()
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code == 0 || cniErr.Msg == "" {
				t.Errorf("%s with %q: %v, want a CNI error with code and msg", name, data, err)
			}
		}
	}
}

// Sanity: the hostPort table does not exist unless a pod asked for hostPorts.
func TestNoHostPortTableWithoutPortMappings(t *testing.T) {
	node := newNS(t, "node")
	conf := pluginConf(t, confOpts{cidr: "10.244.9.0/24", dataDir: t.TempDir()})
	a := args("plain", newNS(t, "pod"), conf)
	if _, err := add(t, node, a); err != nil {
		t.Fatal(err)
	}
	err := node.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, HostPortTable)
		if err != nil {
			return err
		}
		_, err = nft.List(context.Background(), "map")
		return err
	})
	if !knftables.IsNotFound(err) {
		t.Errorf("hostPort table exists without any portMappings (err %v)", err)
	}
}
