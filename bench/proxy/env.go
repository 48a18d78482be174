package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// layout is the part of a knet cluster's cluster.json the benchmark needs.
type layout struct {
	Underlay    netip.Prefix `json:"underlay"`
	Gateway     netip.Addr   `json:"gateway"`
	ServiceCIDR netip.Prefix `json:"serviceCIDR"`
	PodCIDR     netip.Prefix `json:"podCIDR"`
	LBPool      netip.Prefix `json:"lbPool"`
	APIPort     int          `json:"apiPort"`
	Bridge      string       `json:"bridge"`
	Nodes       []struct {
		IP netip.Addr `json:"ip"`
	} `json:"nodes"`
}

func readLayout(dir string) (layout, error) {
	var l layout
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return l, fmt.Errorf("read cluster layout (is the cluster up? `bin/knet up --name NAME --nodes 1`): %w", err)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("parse %s/cluster.json: %w", dir, err)
	}
	if !l.Underlay.IsValid() || !l.Gateway.IsValid() || l.Bridge == "" || l.APIPort == 0 || !l.ServiceCIDR.IsValid() || !l.PodCIDR.IsValid() {
		return l, fmt.Errorf("%s/cluster.json lacks underlay, gateway, bridge, apiPort, serviceCIDR or podCIDR", dir)
	}
	return l, nil
}

// freeUnderlayAddrs picks n underlay addresses that are neither the gateway, a node, nor in the
// LoadBalancer pool, starting at .150 of the underlay so they stay clear of node addresses
// (.2, .3, ...) and of the pool at the top of the range.
func (l layout) freeUnderlayAddrs(n int) ([]netip.Addr, error) {
	used := map[netip.Addr]bool{l.Gateway: true}
	for _, nd := range l.Nodes {
		used[nd.IP] = true
	}
	a := l.Underlay.Addr()
	for i := 0; i < 150; i++ {
		a = a.Next()
	}
	var out []netip.Addr
	for ; len(out) < n && l.Underlay.Contains(a); a = a.Next() {
		if !used[a] && !l.LBPool.Contains(a) {
			out = append(out, a)
		}
	}
	if len(out) < n {
		return nil, fmt.Errorf("no %d free addresses in underlay %s above .150", n, l.Underlay)
	}
	return out, nil
}

// state records every kernel object and process the benchmark made, on disk, so that
// `proxybench cleanup --state FILE` (run.sh's trap) removes them even after the run process was
// killed. Processes are recorded with their command line so a reused PID is never signalled.
type state struct {
	mu        sync.Mutex
	path      string
	Netns     []string    `json:"netns"`
	HostLinks []string    `json:"hostLinks"`
	Procs     []procEntry `json:"procs"`
}

type procEntry struct {
	PID     int    `json:"pid"`
	Cmdline string `json:"cmdline"` // /proc/PID/cmdline with NULs as spaces, at start
}

func (s *state) save() {
	if s.path == "" {
		return
	}
	b, _ := json.Marshal(s)
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		_ = os.Rename(tmp, s.path)
	}
}

func (s *state) addNetns(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Netns = append(s.Netns, name)
	s.save()
}

func (s *state) addHostLink(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.HostLinks = append(s.HostLinks, name)
	s.save()
}

func (s *state) addProc(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Procs = append(s.Procs, procEntry{PID: pid, Cmdline: cmdline(pid)})
	s.save()
}

func (s *state) removeProc(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.Procs {
		if p.PID == pid {
			s.Procs = append(s.Procs[:i], s.Procs[i+1:]...)
			break
		}
	}
	s.save()
}

func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &state{path: path}
	if len(b) == 0 {
		return s, nil
	}
	return s, json.Unmarshal(b, s)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// cleanup stops the recorded processes (by PID, only if the command line still matches) and
// deletes the recorded links and namespaces; deleting a namespace also removes its veth ends,
// routes and nftables tables. It reports what it could not remove.
func (s *state) cleanup() error {
	s.mu.Lock()
	procs := append([]procEntry(nil), s.Procs...)
	links := append([]string(nil), s.HostLinks...)
	netns := append([]string(nil), s.Netns...)
	s.mu.Unlock()

	var problems []string
	for _, p := range procs {
		if p.Cmdline == "" || cmdline(p.PID) != p.Cmdline {
			continue // exited, or the PID now belongs to someone else
		}
		_ = syscall.Kill(p.PID, syscall.SIGTERM)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range procs {
		for p.Cmdline != "" && cmdline(p.PID) == p.Cmdline && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.Cmdline != "" && cmdline(p.PID) == p.Cmdline {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	for _, l := range links {
		if exec.Command("ip", "link", "show", l).Run() != nil {
			continue
		}
		if out, err := exec.Command("ip", "link", "del", l).CombinedOutput(); err != nil {
			problems = append(problems, fmt.Sprintf("ip link del %s: %v: %s", l, err, out))
		}
	}
	for _, n := range netns {
		if _, err := os.Stat("/run/netns/" + n); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
			problems = append(problems, fmt.Sprintf("ip netns del %s: %v: %s", n, err, out))
		}
	}
	s.mu.Lock()
	s.Procs, s.HostLinks, s.Netns = nil, nil, nil
	s.save()
	s.mu.Unlock()
	if len(problems) > 0 {
		return fmt.Errorf("cleanup left objects behind (remove them by hand): %s", strings.Join(problems, "; "))
	}
	return nil
}

// benchNet is the benchmark's network: two proxy namespaces, each with one leg on the cluster's
// underlay bridge (to reach the API server at the gateway) and one veth to the backend
// namespace, whose lo holds the endpoint addresses. No namespace gets a default route; the
// Service CIDR is routed towards the backend veth so that nothing un-NATed can leave through the
// underlay.
type benchNet struct {
	suffix  string
	knetNS  string
	kpNS    string
	beNS    string
	knetIP  netip.Addr // underlay address = Node InternalIP
	kpIP    netip.Addr
	backend []netip.Addr // endpoint addresses on the backend's lo
}

const (
	backendPort   = 8080
	servicePort   = 80
	backendRange  = "10.250.0.0/16" // endpoints; outside every pod and Service range knet uses
	knetLinkAddr  = "10.251.0.1/30"
	knetLinkPeer  = "10.251.0.2/30"
	knetLinkGW    = "10.251.0.2"
	kpLinkAddr    = "10.251.0.5/30"
	kpLinkPeer    = "10.251.0.6/30"
	kpLinkGW      = "10.251.0.6"
	backendAddrs  = 100
	proxyUnderDev = "u0"
	proxyBEDev    = "be0"
)

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runBatch(ns string, lines []string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", ns, err, out)
	}
	return nil
}

func setupNet(l layout, st *state) (*benchNet, error) {
	addrs, err := l.freeUnderlayAddrs(2)
	if err != nil {
		return nil, err
	}
	sfx := randomSuffix()
	n := &benchNet{
		suffix: sfx,
		knetNS: "knetbench-knet-" + sfx, kpNS: "knetbench-kp-" + sfx, beNS: "knetbench-be-" + sfx,
		knetIP: addrs[0], kpIP: addrs[1],
	}
	for _, ns := range []string{n.knetNS, n.kpNS, n.beNS} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		st.addNetns(ns)
		if err := run("ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
			return nil, err
		}
	}
	bits := l.Underlay.Bits()
	legs := []struct {
		ns, hostLink, beLink string
		ip                   netip.Addr
		addr, peer, gw       string
	}{
		{n.knetNS, "kbk" + sfx, "k0", n.knetIP, knetLinkAddr, knetLinkPeer, knetLinkGW},
		{n.kpNS, "kbp" + sfx, "p0", n.kpIP, kpLinkAddr, kpLinkPeer, kpLinkGW},
	}
	for _, g := range legs {
		if err := run("ip", "link", "add", g.hostLink, "type", "veth", "peer", "name", proxyUnderDev, "netns", g.ns); err != nil {
			return nil, err
		}
		st.addHostLink(g.hostLink)
		if err := run("ip", "link", "set", g.hostLink, "master", l.Bridge, "up"); err != nil {
			return nil, err
		}
		if err := runBatch(g.ns, []string{
			fmt.Sprintf("addr add %s/%d dev %s", g.ip, bits, proxyUnderDev),
			"link set " + proxyUnderDev + " up",
			fmt.Sprintf("link add %s type veth peer name %s netns %s", proxyBEDev, g.beLink, n.beNS),
			fmt.Sprintf("addr add %s dev %s", g.addr, proxyBEDev),
			"link set " + proxyBEDev + " up",
		}); err != nil {
			return nil, err
		}
		if err := runBatch(n.beNS, []string{
			fmt.Sprintf("addr add %s dev %s", g.peer, g.beLink),
			"link set " + g.beLink + " up",
		}); err != nil {
			return nil, err
		}
		if err := runBatch(g.ns, []string{
			fmt.Sprintf("route add %s via %s dev %s", backendRange, g.gw, proxyBEDev),
			fmt.Sprintf("route add %s dev %s scope link", l.ServiceCIDR, proxyBEDev),
		}); err != nil {
			return nil, err
		}
		// Short connections at full speed: a wide port range in this namespace only.
		if err := run("ip", "netns", "exec", g.ns, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"); err != nil {
			return nil, err
		}
	}
	var lines []string
	base := netip.MustParsePrefix(backendRange).Addr()
	for i := 0; i < backendAddrs; i++ {
		a := netip.AddrFrom4([4]byte{base.As4()[0], base.As4()[1], byte(i / 250), byte(1 + i%250)})
		n.backend = append(n.backend, a)
		lines = append(lines, fmt.Sprintf("addr add %s/32 dev lo", a))
	}
	if err := runBatch(n.beNS, lines); err != nil {
		return nil, err
	}
	return n, nil
}

// writeKubeconfig copies the cluster's admin kubeconfig with the server rewritten to the gateway
// address, which the bench namespaces reach over the underlay (the API server certificate
// includes it).
func writeKubeconfig(clusterDir, out string, l layout) error {
	cfg, err := clientcmd.LoadFromFile(filepath.Join(clusterDir, "kubeconfig"))
	if err != nil {
		return fmt.Errorf("load admin kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + netip.AddrPortFrom(l.Gateway, uint16(l.APIPort)).String()
	}
	return clientcmd.WriteToFile(*cfg, out)
}

// procChildren lists the children of pid, which any of its threads may have started.
func procChildren(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// procMemory returns VmRSS and VmHWM (peak RSS) of pid in bytes.
func procMemory(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm
}
