// Package podnetbench measures pod network TCP throughput with iperf3 over a
// topology built from real namespaces by knet's own CNI plugin and podnet
// controller. It only runs when KNET_BENCH=1 (see run.sh).
package podnetbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	netnsh "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"knet/internal/cni"
	"knet/internal/podnet"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type netns struct {
	ns.NetNS
	name string
}

type bench struct {
	t      *testing.T
	prefix string
	n      int
	// nodeTables loads node-tables.nft into every node (KNET_BENCH_NODE_TABLES=0 turns it off).
	nodeTables bool
	// pin is iperf3's -A client,server CPU affinity, "" on a 1-CPU machine.
	pin string
}

func (b *bench) newNS(role string) *netns {
	b.t.Helper()
	b.n++
	name := fmt.Sprintf("%s-%s%d", b.prefix, role, b.n)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	b.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { h.Close() })
	n := &netns{NetNS: h, name: name}
	n.run(b.t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *netns) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("[%s] %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type node struct {
	*netns
	name, ip, cidr, dataDir string
	mtu, gso                int
}

// underlayGSOMaxSize is what internal/cluster gives every underlay link.
const underlayGSOMaxSize = cni.BigTCPGSOSize

// setGSOMaxSize sets a link's IPv4 GSO limit in a namespace (iproute2 before
// 6.3 cannot).
func (n *netns) setGSOMaxSize(t *testing.T, dev string, size int) {
	t.Helper()
	h, err := netlink.NewHandleAt(netnsh.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err == nil {
		err = h.LinkSetGSOIPv4MaxSize(l, size)
	}
	if err != nil {
		t.Fatalf("[%s] gso_ipv4_max_size %d on %s: %v", n.name, size, dev, err)
	}
}

// cluster is an underlay bridge namespace with two nodes running podnet, built
// as knet up builds it. gso is the pods' gsoMaxSize (0: the kernel's 64 KiB).
func (b *bench) cluster(mode podnet.Mode, subnet, gso int) (*node, *node) {
	t := b.t
	ul := b.newNS("ul")
	// As knet up's host bridge. The namespace's bridge-nf-call-iptables stays
	// 1, as on most hosts, so br_netfilter still runs for frames between
	// nodes (the kernel ORs it with the bridge's knobs); with no tables here
	// it finds no hooks.
	ul.run(t, "ip", "link", "add", "br0", "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0")
	ul.run(t, "ip", "link", "set", "br0", "up")
	mtu := 1500
	if mode == podnet.ModeVXLAN {
		mtu = 1450
	}
	cs := fake.NewClientset()
	var nodes []*node
	for i := 1; i <= 2; i++ {
		n := &node{netns: b.newNS("node"), name: fmt.Sprintf("node%d", i),
			ip: fmt.Sprintf("172.29.%d.%d", subnet, i+1), cidr: fmt.Sprintf("10.%d.%d.0/24", 200+subnet, i),
			dataDir: t.TempDir(), mtu: mtu, gso: gso}
		port := fmt.Sprintf("p%d", i)
		ul.run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.netns.name)
		ul.run(t, "ip", "link", "set", port, "master", "br0", "up")
		ul.setGSOMaxSize(t, port, underlayGSOMaxSize)
		n.setGSOMaxSize(t, "eth0", underlayGSOMaxSize)
		n.run(t, "ip", "addr", "add", n.ip+"/24", "dev", "eth0")
		n.run(t, "ip", "link", "set", "eth0", "up")
		if b.nodeTables {
			n.run(t, "nft", "-f", "node-tables.nft")
		}
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name},
			Spec:   corev1.NodeSpec{PodCIDR: n.cidr, PodCIDRs: []string{n.cidr}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}}}}
		if _, err := cs.CoreV1().Nodes().Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	ul.setGSOMaxSize(t, "br0", underlayGSOMaxSize)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, n := range nodes {
		var c *podnet.Controller
		if err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = podnet.New(podnet.Config{Client: cs, NodeName: n.name, Mode: mode, Link: "eth0", Logger: quiet})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go func() { c.Run(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() { cancel(); <-done; <-done })
	// Wait for each node's route to the other's podCIDR.
	for i, n := range nodes {
		other := nodes[1-i]
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(n.run(t, "ip", "route", "show", other.cidr), "proto 75") {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no route to %s", n.name, other.cidr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes[0], nodes[1]
}

type pod struct {
	*netns
	ip string
}

func (b *bench) pod(n *node) *pod {
	p := b.newNS("pod")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"knet","type":"knet","podCIDR":%q,"mtu":%d,"gsoMaxSize":%d,"dataDir":%q}`, n.cidr, n.mtu, n.gso, n.dataDir)
	var ip string
	err := n.Do(func(ns.NetNS) error {
		res, err := (&cni.Plugin{Logger: quiet}).Add(&skel.CmdArgs{ContainerID: p.name, Netns: p.Path(), IfName: "eth0", StdinData: []byte(conf)})
		if err == nil {
			ip = res.IPs[0].Address.IP.String()
		}
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return &pod{netns: p, ip: ip}
}

// run is one iperf3 measurement: the receiver's throughput, and the CPU
// time the sender and receiver processes used per GB moved. Softirq work is
// charged to the process it interrupts on this kernel (no IRQ time
// accounting), so the CPU figure includes the path's per-packet cost; it is
// far less sensitive to other load on the machine than the throughput.
type run struct {
	gbps, cpuPerGB float64
}

// iperf runs one iperf3 client from `from` to a one-shot server in `to`.
func (b *bench) iperf(from, to *netns, toIP string, seconds int) run {
	t := b.t
	srv := exec.Command("ip", "netns", "exec", to.name, "iperf3", "-s", "-1", "-B", toIP, "-p", "5201")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill() // our own child, by PID
		srv.Wait()
	}()
	type result struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	args := []string{"netns", "exec", from.name, "iperf3", "-c", toIP, "-p", "5201", "-t", strconv.Itoa(seconds), "-J"}
	if b.pin != "" {
		args = append(args, "-A", b.pin)
	}
	var r result
	var out []byte
	// Retry until the server listens; iperf3 -J may report "connection
	// refused" in its JSON with exit status 0.
	for try := 0; try < 50; try++ {
		var err error
		out, err = exec.Command("ip", args...).Output()
		r = result{}
		if jerr := json.Unmarshal(out, &r); err == nil && jerr == nil && r.Error == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	sum := r.End.SumReceived
	if r.Error != "" || sum.BitsPerSecond == 0 {
		t.Fatalf("iperf3 %s -> %s gave no result:\n%s", from.name, toIP, out)
	}
	return run{gbps: sum.BitsPerSecond / 1e9, cpuPerGB: (r.End.CPU.Host + r.End.CPU.Remote) / 100 * sum.Seconds / (sum.Bytes / 1e9)}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestPodnetThroughput compares pod-to-pod TCP paths with a raw veth pair.
//
// The baseline is the cheapest path two network namespaces can have: one
// veth pair, MTU 1500, no bridge, no routing hop, no netfilter, the kernel's
// defaults. Every path runs the same iperf3 command (single stream, same
// duration, client pinned to CPU 0 and server to CPU 1), and the paths take
// turns round by round, so a burst of load from elsewhere hits all of them
// alike. The table shows the median and best of the rounds and the CPU cost
// per GB; ratios are against the baseline of the same run.
//
// Host-gw pods get gsoMaxSize (BIG TCP, as knet up gives them): TCP moves
// 256 KiB per packet instead of 64 KiB, so each hop's per-packet cost is paid
// a quarter as often. Two more rows keep that honest: the veth pair with the
// same limit (what the setting does without knet's hops), and the host-gw
// paths with the kernel's 64 KiB (what knet's hops cost without it). Pods on
// the VXLAN cluster have MTU 1450 (MSS 1398 instead of 1448) and 64 KiB: a
// VXLAN packet cannot carry more. With TSO on every device the segment size
// hardly matters on veths, so the baseline stays at MTU 1500.
func TestPodnetThroughput(t *testing.T) {
	if os.Getenv("KNET_BENCH") != "1" {
		t.Skip("benchmark: run bench/podnet/run.sh (sets KNET_BENCH=1)")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 not installed")
	}
	prefix := os.Getenv("KNET_BENCH_PREFIX")
	if prefix == "" {
		prefix = "knettest-bench-" + randHex(3)
	}
	seconds, _ := strconv.Atoi(os.Getenv("KNET_BENCH_SECONDS"))
	if seconds <= 0 {
		seconds = 3
	}
	rounds, _ := strconv.Atoi(os.Getenv("KNET_BENCH_ROUNDS"))
	if rounds <= 0 {
		rounds = 3
	}
	b := &bench{t: t, prefix: prefix, nodeTables: os.Getenv("KNET_BENCH_NODE_TABLES") != "0"}
	if runtime.NumCPU() >= 2 {
		b.pin = "0,1"
	}

	// Baseline: two namespaces joined by nothing but a veth pair.
	ra, rb := b.newNS("rawa"), b.newNS("rawb")
	ra.run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", rb.name)
	ra.run(t, "ip", "addr", "add", "192.168.250.1/30", "dev", "eth0")
	rb.run(t, "ip", "addr", "add", "192.168.250.2/30", "dev", "eth0")
	ra.run(t, "ip", "link", "set", "eth0", "up")
	rb.run(t, "ip", "link", "set", "eth0", "up")
	// The same pair with the pods' GSO limit.
	rc, rd := b.newNS("rawc"), b.newNS("rawd")
	rc.run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", rd.name)
	rc.run(t, "ip", "addr", "add", "192.168.250.5/30", "dev", "eth0")
	rd.run(t, "ip", "addr", "add", "192.168.250.6/30", "dev", "eth0")
	rc.setGSOMaxSize(t, "eth0", cni.BigTCPGSOSize)
	rd.setGSOMaxSize(t, "eth0", cni.BigTCPGSOSize)
	rc.run(t, "ip", "link", "set", "eth0", "up")
	rd.run(t, "ip", "link", "set", "eth0", "up")

	h1, h2 := b.cluster(podnet.ModeHostGW, 1, cni.BigTCPGSOSize)
	hA, hB, hC := b.pod(h1), b.pod(h1), b.pod(h2)
	v1, v2 := b.cluster(podnet.ModeVXLAN, 2, 0)
	vA, vC := b.pod(v1), b.pod(v2)
	s1, s2 := b.cluster(podnet.ModeHostGW, 3, 0)
	sA, sB, sC := b.pod(s1), b.pod(s1), b.pod(s2)

	paths := []struct {
		name     string
		from, to *netns
		ip       string
		runs     []run
	}{
		{name: "raw veth pair (baseline)", from: ra, to: rb, ip: "192.168.250.2"},
		{name: fmt.Sprintf("raw veth pair, GSO %dK", cni.BigTCPGSOSize>>10), from: rc, to: rd, ip: "192.168.250.6"},
		{name: "pod->pod same node (bridge)", from: hA.netns, to: hB.netns, ip: hB.ip},
		{name: "pod->pod cross node host-gw", from: hA.netns, to: hC.netns, ip: hC.ip},
		{name: "same node, GSO 64K", from: sA.netns, to: sB.netns, ip: sB.ip},
		{name: "cross node host-gw, GSO 64K", from: sA.netns, to: sC.netns, ip: sC.ip},
		{name: "pod->pod cross node vxlan", from: vA.netns, to: vC.netns, ip: vC.ip},
	}
	load0 := loadavg()
	for r := 0; r < rounds; r++ {
		for i := range paths {
			p := &paths[i]
			p.runs = append(p.runs, b.iperf(p.from, p.to, p.ip, seconds))
		}
	}
	tables := "node nftables as in a cluster (proxy + netpol, conntrack on)"
	if !b.nodeTables {
		tables = "no nftables in the nodes"
	}
	fmt.Printf("\nTCP throughput, iperf3 %ds single stream, %d rounds, %d cores, pinned %q, %s\n", seconds, rounds, runtime.NumCPU(), b.pin, tables)
	fmt.Printf("load average %s at start, %s at end\n", load0, loadavg())
	fmt.Printf("%-30s %9s %9s %9s %9s %9s\n", "path", "median", "best", "vs veth", "CPU s/GB", "CPU vs veth")
	base := paths[0].runs
	for _, p := range paths {
		fmt.Printf("%-30s %9.2f %9.2f %8.0f%% %9.3f %8.2fx\n", p.name, median(p.runs, gbps), best(p.runs),
			100*median(p.runs, gbps)/median(base, gbps), median(p.runs, cpu), median(p.runs, cpu)/median(base, cpu))
	}
	// knet's own overhead: the BIG TCP paths against the veth pair with the same limit.
	big := paths[1].runs
	fmt.Printf("against the veth pair with the same GSO limit:")
	for _, p := range paths[2:4] {
		fmt.Printf(" %s %.0f%% (CPU %.2fx);", strings.TrimPrefix(p.name, "pod->pod "),
			100*median(p.runs, gbps)/median(big, gbps), median(p.runs, cpu)/median(big, cpu))
	}
	fmt.Println()
}

func gbps(r run) float64 { return r.gbps }
func cpu(r run) float64  { return r.cpuPerGB }

func median(rs []run, f func(run) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func best(rs []run) float64 {
	m := 0.0
	for _, r := range rs {
		m = max(m, r.gbps)
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
