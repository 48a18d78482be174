// Command lb benchmarks the failover of a LoadBalancer address on a real 2-node `knet up`
// cluster: a client on the host polls http://<LB IP>/hostname every 10 ms while the `knet node`
// process of the node that answers ARP for the address is killed (the knet daemon restarts it),
// and the benchmark reports the longest time without a successful answer and when the other
// node's gratuitous ARP moved the host's neighbour entry. A third scenario takes the owner's
// underlay link down instead, a node loss as the network sees it. It prints a table and asserts
// nothing.
//
// It owns the API namespace "lbbench" and reads the host's neighbour table; the only link it
// changes is the host end of the owner node's underlay veth (down, then up again, also on
// failure); the only process it signals is the owner node's `knet node`, by the PID in /var/lib/knet/<cluster>/nodes/<node>/
// node.pid, after checking that PID still runs that node's process. bench/lb/run.sh starts and
// removes the cluster (the node processes belong to that cluster's daemon).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/vishvananda/netlink"
)

const (
	benchNamespace = "lbbench"
	agnhost        = "registry.k8s.io/e2e-test-images/agnhost:2.56"
)

type options struct {
	cluster   string
	reps      int
	interval  time.Duration
	timeout   time.Duration
	minUptime time.Duration
	recovery  time.Duration
	cut       time.Duration
	observe   time.Duration
	scenarios string
}

func main() {
	var o options
	fs := flag.NewFlagSet("lbbench", flag.ExitOnError)
	fs.StringVar(&o.cluster, "cluster", "lbb", "knet cluster with 2 nodes (started by run.sh)")
	fs.IntVar(&o.reps, "reps", 5, "kills per scenario")
	fs.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between polls")
	fs.DurationVar(&o.timeout, "request-timeout", time.Second, "timeout of one poll")
	// The knet daemon restarts a node process after 200 ms, doubling the delay on every restart
	// unless the process ran for over a minute; waiting that long keeps every kill alike.
	fs.DurationVar(&o.minUptime, "min-uptime", 61*time.Second, "wait until the owner's node process has run this long before killing it")
	fs.DurationVar(&o.recovery, "recovery-timeout", 3*time.Minute, "give up when a scenario has not recovered after a kill within this")
	fs.DurationVar(&o.cut, "cut", 3*time.Second, "cut scenario: how long the owner's underlay link stays down")
	fs.DurationVar(&o.observe, "observe", 10*time.Second, "measure at least this long after each disruption")
	fs.StringVar(&o.scenarios, "scenarios", "spread,non-owner,cut", "comma-separated scenarios to run, in order")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "lbbench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// layout is the part of the cluster's cluster.json the benchmark needs.
type layout struct {
	Bridge string `json:"bridge"`
	Nodes  []struct {
		Name     string `json:"name"`
		Netns    string `json:"netns"`
		HostVeth string `json:"hostVeth"`
	} `json:"nodes"`
}

type bench struct {
	o      options
	dir    string
	client kubernetes.Interface
	l      layout
	macs   map[string]string // eth0 MAC → node name
	link   int               // host bridge ifindex
	rows   []row
	// strays counts rounds before which the host's entry was found on a non-owner (and deleted).
	strays map[string]int
}

// row is one kill.
type row struct {
	scenario   string
	owner      string
	gap        time.Duration
	gapAt      time.Duration // gap start relative to the kill
	moves      []string      // neighbour moves: "+350ms → node2"
	failed     int
	total      int
	recoveryAt time.Duration // backends Ready and polls succeeding again
	entryAt    string        // node the host's entry pointed to at recovery
}

func run(ctx context.Context, o options) error {
	b := &bench{o: o, dir: filepath.Join("/var/lib/knet", o.cluster), macs: map[string]string{}, strays: map[string]int{}}
	data, err := os.ReadFile(filepath.Join(b.dir, "cluster.json"))
	if err != nil {
		return fmt.Errorf("read cluster layout (is the cluster up? `bin/knet up --name %s --nodes 2`): %w", o.cluster, err)
	}
	if err := json.Unmarshal(data, &b.l); err != nil {
		return fmt.Errorf("parse cluster.json: %w", err)
	}
	if len(b.l.Nodes) != 2 {
		return fmt.Errorf("cluster %s has %d nodes; the benchmark needs exactly 2", o.cluster, len(b.l.Nodes))
	}
	br, err := netlink.LinkByName(b.l.Bridge)
	if err != nil {
		return fmt.Errorf("host bridge %s: %w", b.l.Bridge, err)
	}
	b.link = br.Attrs().Index
	for _, n := range b.l.Nodes {
		out, err := exec.Command("ip", "netns", "exec", n.Netns, "cat", "/sys/class/net/eth0/address").Output()
		if err != nil {
			return fmt.Errorf("eth0 MAC of node %s: %w", n.Name, err)
		}
		b.macs[strings.TrimSpace(string(out))] = n.Name
	}
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(b.dir, "kubeconfig"))
	if err != nil {
		return err
	}
	if b.client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s (left over from an earlier run? start from a fresh cluster): %w", benchNamespace, err)
	}
	fmt.Printf("load before: %s", loadavg())

	for _, name := range strings.Split(o.scenarios, ",") {
		sc, ok := scenarioByName(name)
		if !ok {
			return fmt.Errorf("unknown scenario %q: use spread, non-owner or cut", name)
		}
		if err := b.scenario(ctx, name, sc); err != nil {
			return err
		}
	}
	fmt.Printf("load after: %s", loadavg())
	b.print()
	return nil
}

// scenarioSpec says where the two backends go and how the owner is taken away.
type scenarioSpec struct {
	spread bool // one backend per node; else both on the node that does not own the address
	cut    bool // take the owner's underlay link down for o.cut; else SIGKILL its node process
}

// scenarioByName returns the named scenario.
func scenarioByName(name string) (scenarioSpec, bool) {
	switch name {
	case "spread":
		// The owner's backend dies with its node process (a killed node process takes its pods).
		return scenarioSpec{spread: true}, true
	case "non-owner":
		// Only the announcement (and the owner's proxy process) goes away. The owner's kernel
		// keeps forwarding with the nftables rules the dead process left, so this isolates how
		// the restart disturbs traffic rather than a real node loss.
		return scenarioSpec{}, true
	case "cut":
		// A real loss of the owner as the network sees it: its underlay link goes down (the
		// host end of its veth), so it neither answers ARP nor forwards nor sends heartbeats,
		// until the link comes back after o.cut.
		return scenarioSpec{cut: true}, true
	}
	return scenarioSpec{}, false
}

// scenario creates a LoadBalancer Service, learns its owner from the host's neighbour entry,
// places two backends as spec says, and takes the owner away o.reps times.
func (b *bench) scenario(ctx context.Context, name string, spec scenarioSpec) error {
	svcName := "lbb-" + name
	labels := map[string]string{"app": svcName}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: benchNamespace},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: labels,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := b.client.CoreV1().Services(benchNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s: %w", svcName, err)
	}
	defer func() {
		// The next scenario runs without this one's pods and address.
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = b.client.CoreV1().Services(benchNamespace).Delete(dctx, svcName, metav1.DeleteOptions{})
		_ = b.client.CoreV1().Pods(benchNamespace).DeleteCollection(dctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "app=" + svcName})
	}()
	ip, err := b.waitLBIP(ctx, svcName)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nw := &neighWatcher{ip: net.ParseIP(ip.String()), link: b.link}
	go func() {
		if err := nw.run(wctx); err != nil {
			logf("neighbour watcher: %v", err)
		}
	}()
	owner, err := b.learnOwner(ctx, ip, nw)
	if err != nil {
		return err
	}
	other := b.l.Nodes[0].Name
	if owner == other {
		other = b.l.Nodes[1].Name
	}
	nodes := []string{other, other}
	if spec.spread {
		nodes = []string{b.l.Nodes[0].Name, b.l.Nodes[1].Name}
	}
	var podNames []string
	for i, node := range nodes {
		p := netexecPod(fmt.Sprintf("%s-%d", svcName, i), node, labels)
		if _, err := b.client.CoreV1().Pods(benchNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", p.Name, err)
		}
		podNames = append(podNames, p.Name)
	}
	logf("%s: LoadBalancer %s owned by %s, backends on %v", name, ip, owner, nodes)
	pl := &poller{}
	go pl.run(wctx, "http://"+ip.String()+"/hostname", b.o.interval, b.o.timeout)

	for rep := range b.o.reps {
		if err := b.waitSteady(ctx, name, owner, podNames, nw, pl); err != nil {
			return fmt.Errorf("%s before kill %d: %w", name, rep, err)
		}
		var r row
		var err error
		if spec.cut {
			r, err = b.cutOnce(ctx, owner, podNames, nw, pl)
		} else {
			r, err = b.killOnce(ctx, owner, podNames, nw, pl)
		}
		if err != nil {
			return fmt.Errorf("%s round %d: %w", name, rep, err)
		}
		r.scenario = name
		b.rows = append(b.rows, r)
		logf("%s round %d: gap %v at +%v, neighbour moves %v, %d/%d polls failed, recovered at +%v",
			name, rep, r.gap.Round(time.Millisecond), r.gapAt.Round(time.Millisecond), r.moves, r.failed, r.total, r.recoveryAt.Round(time.Second))
	}
	return nil
}

func netexecPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "netexec", Image: agnhost, Args: []string{"netexec", "--http-port=8080", "--udp-port=8081"}, // /healthz stays 412 without the UDP server
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

func (b *bench) waitLBIP(ctx context.Context, name string) (netip.Addr, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		s, err := b.client.CoreV1().Services(benchNamespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			if a, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP); err == nil {
				return a, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return netip.Addr{}, fmt.Errorf("service %s got no LoadBalancer address within a minute", name)
}

// learnOwner makes the host resolve the address (a TCP connect; the answer does not matter)
// and maps the neighbour entry's MAC to a node.
func (b *bench) learnOwner(ctx context.Context, ip netip.Addr, nw *neighWatcher) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp4", net.JoinHostPort(ip.String(), "80"), 200*time.Millisecond); err == nil {
			c.Close()
		}
		if node, ok := b.macs[nw.mac()]; ok {
			return node, nil
		}
		if mac := nw.mac(); mac != "" {
			return "", fmt.Errorf("neighbour entry of %s has MAC %s, which is no node's eth0 (%v)", ip, mac, b.macs)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("no node answered ARP for %s within a minute", ip)
}

func (b *bench) nodeDir(node string) string { return filepath.Join(b.dir, "nodes", node) }

// nodePID returns the running node process of node and how long it has run.
func (b *bench) nodePID(node string) (int, time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(b.nodeDir(node), "node.pid"))
	if err != nil {
		return 0, 0, fmt.Errorf("read node.pid of %s: %w", node, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, 0, fmt.Errorf("node.pid of %s: %w", node, err)
	}
	// Only signal what is still this node's process: the PID file is stale after a crash.
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmd), "node\x00") || !strings.Contains(string(cmd), filepath.Join(b.nodeDir(node), "node.json")) {
		return 0, 0, fmt.Errorf("PID %d of node.pid is not %s's node process (cmdline %q)", pid, node, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return pid, procUptime(pid), nil
}

// procUptime is how long pid has run (field 22 of /proc/PID/stat, in clock ticks of 1/100 s).
func procUptime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	up, err2 := os.ReadFile("/proc/uptime")
	if err != nil || err2 != nil {
		return 0
	}
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return 0
	}
	ticks, _ := strconv.ParseFloat(f[19], 64)
	sys, _ := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	return time.Duration((sys - ticks/100) * float64(time.Second))
}

func (b *bench) podsReady(ctx context.Context, names []string) bool {
	for _, n := range names {
		p, err := b.client.CoreV1().Pods(benchNamespace).Get(ctx, n, metav1.GetOptions{})
		if err != nil || !podReady(p) {
			return false
		}
	}
	return true
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitSteady waits until the owner's node process has run o.minUptime, both backends are
// Ready, the owner answers ARP again and the last 100 polls succeeded.
func (b *bench) waitSteady(ctx context.Context, scenario, owner string, pods []string, nw *neighWatcher, pl *poller) error {
	deadline := time.Now().Add(b.o.recovery + b.o.minUptime)
	last := ""
	for {
		_, up, err := b.nodePID(owner)
		var why string
		switch {
		case err != nil:
			why = err.Error()
		case up < b.o.minUptime:
			why = fmt.Sprintf("owner's node process up for %v", up.Round(time.Second))
		case !b.podsReady(ctx, pods):
			why = "backends not Ready"
		case nw.mac() == "":
			why = "host has no neighbour entry for the address yet"
		case b.macs[nw.mac()] != owner:
			why = fmt.Sprintf("neighbour entry points to %q", b.macs[nw.mac()])
			// An entry that a busy client keeps confirming never re-resolves by itself; make
			// the host ask again, so every round starts with the owner answering.
			if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: b.link, Family: netlink.FAMILY_V4, IP: nw.ip}); err == nil {
				logf("deleted the host's neighbour entry for %s (it pointed to %s, not the owner %s)", nw.ip, b.macs[nw.mac()], owner)
				b.strays[scenario]++
				nw.forget()
			}
		case !pl.lastOK(100):
			why = "recent polls failed"
		default:
			return nil
		}
		if why != last && !strings.HasPrefix(why, "owner's node process up") {
			logf("waiting: %s", why)
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("not steady: %s", why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// killOnce SIGKILLs the owner's node process, waits for the scenario to recover, and measures.
func (b *bench) killOnce(ctx context.Context, owner string, pods []string, nw *neighWatcher, pl *poller) (row, error) {
	pid, _, err := b.nodePID(owner)
	if err != nil {
		return row{}, err
	}
	kill := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return row{}, fmt.Errorf("kill node process %d of %s: %w", pid, owner, err)
	}
	// Recovered: a new node process, backends Ready, the entry back on the owner (it wins the
	// election again once its speaker is heard) and 2 s of successful polls.
	recovered, err := b.waitRecovered(ctx, kill, func() bool {
		newPID, _, err := b.nodePID(owner)
		return err == nil && newPID != pid
	}, pods, pl)
	if err != nil {
		return row{}, err
	}
	return b.measure(kill, recovered, owner, nw, pl), nil
}

// cutOnce takes the owner's underlay link down (the host end of its veth, which knet made for
// this cluster) for o.cut, brings it back up (also on every error path), waits for recovery
// and measures. Routes inside the node survive: only the carrier goes away.
func (b *bench) cutOnce(ctx context.Context, owner string, pods []string, nw *neighWatcher, pl *poller) (row, error) {
	var veth string
	for _, n := range b.l.Nodes {
		if n.Name == owner {
			veth = n.HostVeth
		}
	}
	link, err := netlink.LinkByName(veth)
	if err != nil {
		return row{}, fmt.Errorf("host veth %q of %s: %w", veth, owner, err)
	}
	cut := time.Now()
	if err := netlink.LinkSetDown(link); err != nil {
		return row{}, fmt.Errorf("set %s down: %w", veth, err)
	}
	restored := false
	restore := func() error {
		if restored {
			return nil
		}
		restored = true
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up again (do it by hand: ip link set %s up): %w", veth, veth, err)
		}
		return nil
	}
	defer restore()
	select {
	case <-ctx.Done():
		return row{}, ctx.Err()
	case <-time.After(b.o.cut):
	}
	if err := restore(); err != nil {
		return row{}, err
	}
	recovered, err := b.waitRecovered(ctx, cut, func() bool { return true }, pods, pl)
	if err != nil {
		return row{}, err
	}
	return b.measure(cut, recovered, owner, nw, pl), nil
}

// waitRecovered waits at least o.observe (so late effects such as the restarted node's first
// proxy sync are inside the measured window) and until extra() holds, the backends are Ready
// and the last 2 s of polls succeeded. It does not wait for the host's neighbour entry to
// return to the owner: the entry may stay on the other node, which forwards too (see
// waitSteady).
func (b *bench) waitRecovered(ctx context.Context, since time.Time, extra func() bool, pods []string, pl *poller) (time.Time, error) {
	deadline := since.Add(b.o.recovery)
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no recovery within %v", b.o.recovery)
		}
		if time.Since(since) >= b.o.observe && extra() && b.podsReady(ctx, pods) && pl.lastOK(int(2*time.Second/b.o.interval)) {
			return time.Now(), nil
		}
	}
}

// measure computes one row from the polls and neighbour changes between the disruption at t0
// and recovery.
func (b *bench) measure(t0, recovered time.Time, owner string, nw *neighWatcher, pl *poller) row {
	r := row{owner: owner, recoveryAt: recovered.Sub(t0), entryAt: b.macs[nw.mac()]}
	prev := time.Time{}
	for _, q := range pl.between(t0.Add(-time.Second), recovered) {
		if !q.end.Before(t0) {
			r.total++
			if !q.ok {
				r.failed++
			}
		}
		if !q.ok {
			continue
		}
		if !prev.IsZero() && q.end.Sub(prev) > r.gap && q.end.After(t0) {
			r.gap, r.gapAt = q.end.Sub(prev), prev.Sub(t0)
		}
		prev = q.end
	}
	for _, c := range nw.since(t0) {
		node := b.macs[c.mac]
		if node == "" {
			node = c.mac
		}
		r.moves = append(r.moves, fmt.Sprintf("+%v→%s", c.at.Sub(t0).Round(time.Millisecond), node))
	}
	return r
}

func (b *bench) print() {
	fmt.Println()
	head := []string{"scenario", "round", "owner", "gap", "gap starts", "neighbour moves", "entry at end", "failed polls", "recovered"}
	rows := [][]string{head}
	byScenario := map[string][]time.Duration{}
	var order []string
	for i, r := range b.rows {
		if _, ok := byScenario[r.scenario]; !ok {
			order = append(order, r.scenario)
		}
		byScenario[r.scenario] = append(byScenario[r.scenario], r.gap)
		moves := strings.Join(r.moves, " ")
		if moves == "" {
			moves = "none"
		}
		rows = append(rows, []string{r.scenario, strconv.Itoa(i%b.o.reps + 1), r.owner, fmtDur(r.gap), fmt.Sprintf("%+.0f ms", float64(r.gapAt.Microseconds())/1000),
			moves, r.entryAt, fmt.Sprintf("%d/%d", r.failed, r.total), fmt.Sprintf("+%.1f s", r.recoveryAt.Seconds())})
	}
	printRows(rows)
	fmt.Println()
	sum := [][]string{{"scenario", "median gap", "max gap", "goal", "entry found on a non-owner before a round"}}
	for _, s := range order {
		g := byScenario[s]
		sort.Slice(g, func(i, j int) bool { return g[i] < g[j] })
		sum = append(sum, []string{s, fmtDur(g[len(g)/2]), fmtDur(g[len(g)-1]), "≤ 1 s", strconv.Itoa(b.strays[s])})
	}
	printRows(sum)
	fmt.Printf(`
Times are relative to the disruption: SIGKILL of the owner's node process (spread, non-owner) or its
underlay link going down for %v (cut). gap: longest time between two successful answers (by
completion) that ends after the disruption; polls start every %v on a new connection with a %v
timeout. gap starts: when the last success before the gap completed. Neighbour moves: the host's
neighbour entry for the address on %s taking a node's MAC (netlink events); entry at end: where it
pointed at recovery (if not the owner, the benchmark deletes it before the next round so the host
asks again). recovered: backends Ready and 2 s of successful polls (the window is at least %v). spread = one backend per node (the owner's
dies with its node process); non-owner and cut = both backends on the other node. Each kill waits
until the owner's process has run %v (the daemon's restart back-off resets after a minute).
`, b.o.cut, b.o.interval, b.o.timeout, b.l.Bridge, b.o.observe, b.o.minUptime)
}

func printRows(rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var sb strings.Builder
		for i, c := range r {
			sb.WriteString(c)
			if i < len(r)-1 {
				sb.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Println(strings.TrimRight(sb.String(), " "))
	}
}

func fmtDur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b)
}
