// Command proxy benchmarks knet's service proxy against upstream kube-proxy in nftables mode,
// side by side in one run against the same API server and the same Services: sync time at 1k
// and 10k Services, network programming latency of one new Service, new connections per second
// through a ClusterIP at 10 vs 10k Services, and the proxies' memory. It prints a table and
// asserts nothing.
//
// It owns three network namespaces it creates (knetbench-{knet,kp,be}-<random>), their veths
// (one host end per proxy namespace, on the cluster's underlay bridge, for API access), the
// processes it starts, and the objects in the API namespace "proxybench" plus the Nodes
// bench-knet and bench-kp. It never touches the host's routes, its uplink or any other
// namespace; the bench namespaces get no default route. `bench/proxy/run.sh` starts and removes
// the knet cluster it runs against.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	mode, args := "run", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		mode, args = args[0], args[1:]
	}
	var err error
	switch mode {
	case "run":
		err = runMain(args)
	case "serve":
		err = serveMain(args)
	case "probe":
		err = probeMain(args)
	case "connrate":
		err = connrateMain(args)
	case "cleanup":
		err = cleanupMain(args)
	default:
		err = fmt.Errorf("unknown mode %q: use run, serve, probe, connrate or cleanup", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func cleanupMain(args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ExitOnError)
	path := fs.String("state", "", "state file written by `proxybench run --state`")
	_ = fs.Parse(args)
	st, err := loadState(*path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state %s: %w", *path, err)
	}
	return st.cleanup()
}

// options are the run flags.
type options struct {
	cluster     string
	knet        string
	kubeProxy   string
	statePath   string
	quick       bool
	trials      int
	trials10k   int
	apiWorkers  int
	connWorkers int
	connSeconds time.Duration
	poll        time.Duration
	keepLogs    bool
	bound       time.Duration
	knetAlone   bool
}

func runMain(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.cluster, "cluster", "pbench", "knet cluster to run against (started by run.sh)")
	fs.StringVar(&o.knet, "knet", "bin/knet", "knet binary")
	fs.StringVar(&o.kubeProxy, "kube-proxy", "bin/kube-proxy", "kube-proxy binary (v1.35.4, tools/tools.go)")
	fs.StringVar(&o.statePath, "state", "", "file recording what to clean up (for `proxybench cleanup`)")
	fs.BoolVar(&o.quick, "quick", false, "stop after 1k Services")
	fs.IntVar(&o.trials, "trials", 20, "programming-latency trials at 1k Services")
	fs.IntVar(&o.trials10k, "trials-10k", 3, "programming-latency trials at 10k Services (kube-proxy needs ~2 syncs of tens of seconds each)")
	fs.IntVar(&o.apiWorkers, "api-workers", 16, "parallel clients creating objects")
	fs.IntVar(&o.connWorkers, "conn-workers", 2, "concurrent connections of the closed-loop client")
	fs.DurationVar(&o.connSeconds, "conn-duration", 5*time.Second, "duration of each connection-rate run")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "interval of nftables polls for sync times")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the proxies' logs after a successful run")
	fs.DurationVar(&o.bound, "bound", 10*time.Minute, "longest wait for a proxy to program Services; kube-proxy exceeding it at 10k is reported as \"> bound\" and left out of the rest of that size")
	fs.BoolVar(&o.knetAlone, "latency-knet-alone", false, "after the side-by-side latency trials, run as many with kube-proxy paused (SIGSTOP), to show knet's latency without kube-proxy's syncs competing for the CPUs")
	_ = fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b, err := newBench(o)
	if err != nil {
		return err
	}
	err = b.setup(ctx)
	if err == nil {
		err = b.measure(ctx)
	}
	if cerr := b.teardown(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		if len(b.tbl.rows) > 0 {
			fmt.Println("\nPARTIAL RESULTS (the run stopped early):")
			b.tbl.print(os.Stdout)
		}
		return fmt.Errorf("%w (proxy logs kept in %s)", err, b.dir)
	}
	b.tbl.print(os.Stdout)
	if !o.keepLogs {
		_ = os.RemoveAll(b.dir)
	} else {
		fmt.Printf("proxy logs: %s\n", b.dir)
	}
	return nil
}

type bench struct {
	o       options
	dir     string // logs and the rewritten kubeconfig
	l       layout
	st      *state
	net     *benchNet
	client  kubernetes.Interface
	objs    *objects
	knet    *proxyProc
	kp      *proxyProc
	backend *proxyProc // the TCP server in the backend namespace
	tbl     table
	nextIP  int // offset of the next latency-trial ClusterIP in the Service CIDR
	// kpBehind: kube-proxy did not finish within --bound; later measurements of this size skip it.
	kpBehind bool
}

func newBench(o options) (*bench, error) {
	for _, p := range []*string{&o.knet, &o.kubeProxy} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("%s missing (bench/proxy/run.sh builds it): %w", abs, err)
		}
		*p = abs
	}
	dir, err := os.MkdirTemp("", "knet-proxybench-")
	if err != nil {
		return nil, err
	}
	// Trial Services get ClusterIPs from the first 256 addresses of the Service CIDR, the band
	// the API server keeps for static assignment, so they never collide with allocated ones.
	return &bench{o: o, dir: dir, st: &state{path: o.statePath}, nextIP: 100}, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) setup(ctx context.Context) error {
	clusterDir := filepath.Join("/var/lib/knet", b.o.cluster)
	l, err := readLayout(clusterDir)
	if err != nil {
		return err
	}
	b.l = l
	logf("network namespaces on bridge %s (underlay %s)", l.Bridge, l.Underlay)
	if b.net, err = setupNet(l, b.st); err != nil {
		return err
	}
	kubeconfig := filepath.Join(b.dir, "kubeconfig")
	if err := writeKubeconfig(clusterDir, kubeconfig, l); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(clusterDir, "kubeconfig"))
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 2000, 4000
	if b.client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	b.objs = &objects{client: b.client, backends: b.net.backend, perSvc: 10, clusterIPs: map[int]string{}}
	if err := b.objs.ensureNamespace(ctx); err != nil {
		return err
	}
	if err := b.objs.ensureNode(ctx, "bench-knet", b.net.knetIP); err != nil {
		return err
	}
	if err := b.objs.ensureNode(ctx, "bench-kp", b.net.kpIP); err != nil {
		return err
	}

	self, _ := os.Executable()
	b.backend = &proxyProc{name: "backend", netns: b.net.beNS, argv: []string{self, "serve"}, logPath: filepath.Join(b.dir, "backend.log"), st: b.st}
	b.knet = &proxyProc{
		name: "knet", netns: b.net.knetNS, table: "knet-proxy", st: b.st, logPath: filepath.Join(b.dir, "knet.log"),
		argv: []string{b.o.knet, "agent", "--kubeconfig", kubeconfig, "--node-name", "bench-knet", "--node-ip", b.net.knetIP.String(),
			"--cluster-cidr", l.PodCIDR.String(), "--routes=false", "--proxy=true"},
	}
	b.kp = &proxyProc{
		name: "kube-proxy", netns: b.net.kpNS, table: "kube-proxy", st: b.st, logPath: filepath.Join(b.dir, "kube-proxy.log"),
		metrics: "http://127.0.0.1:10249/metrics",
		argv: []string{b.o.kubeProxy, "--proxy-mode=nftables", "--conntrack-max-per-core=0", "--hostname-override=bench-kp",
			"--kubeconfig", kubeconfig, "--cluster-cidr", l.PodCIDR.String(), "--metrics-bind-address=127.0.0.1:10249",
			"--healthz-bind-address=127.0.0.1:10256", "--iptables-min-sync-period=1s", "--v=2"},
	}
	for _, p := range []*proxyProc{b.backend, b.knet, b.kp} {
		if err := p.start(); err != nil {
			return err
		}
	}
	return b.waitReady(ctx)
}

// waitReady waits until both proxies have created their tables and kube-proxy serves metrics.
func (b *bench) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for _, p := range b.proxies() {
		for {
			err := p.exited()
			if err == nil {
				err = exec.CommandContext(ctx, "ip", "netns", "exec", p.netns, "nft", "list", "table", "ip", p.table).Run()
			}
			if err == nil && p.metrics != "" {
				_, err = p.scrape(ctx)
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s not ready (no table ip %s or no metrics): %v; see %s", p.name, p.table, err, p.logPath)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	logf("both proxies running")
	return nil
}

func (b *bench) teardown() error {
	for _, p := range []*proxyProc{b.knet, b.kp, b.backend} {
		if p != nil {
			p.stop()
		}
	}
	if b.client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, n := range []string{"bench-knet", "bench-kp"} {
			_ = b.client.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{})
		}
		_ = b.client.CoreV1().Namespaces().Delete(ctx, benchNamespace, metav1.DeleteOptions{})
	}
	return b.st.cleanup()
}

func (b *bench) proxies() []*proxyProc { return []*proxyProc{b.knet, b.kp} }

func (b *bench) measure(ctx context.Context) error {
	sizes := []int{10, 1000, 10000}
	if b.o.quick {
		sizes = sizes[:2]
	}
	have := 0
	var rate10 [2]float64
	for _, n := range sizes {
		label := count(n)
		logf("creating Services %d..%d (%d endpoints each)", have, n-1, b.objs.perSvc)
		if n <= 1000 {
			if err := b.bulk(ctx, have, n, label); err != nil {
				return err
			}
		} else {
			// At 10k both proxies are stopped while the objects are created: kube-proxy's
			// partial syncs (tens of seconds each) and knet's would otherwise slow the API
			// server on 2 cores to a crawl. The restart below then measures each proxy's full
			// sync of the whole set.
			for _, p := range b.proxies() {
				p.stop()
			}
			res, err := b.objs.createRange(ctx, have, n, b.o.apiWorkers)
			if err != nil {
				return err
			}
			logf("created %d Services + EndpointSlices in %.1fs with both proxies stopped", n-have, res.last.Sub(res.first).Seconds())
		}
		have = n
		if n == 10 {
			r, err := b.connRates(ctx, label)
			if err != nil {
				return err
			}
			rate10 = r
			continue
		}
		if err := b.restartSync(ctx, n-1, label); err != nil {
			return err
		}
		trials := b.o.trials
		if n > 1000 {
			trials = b.o.trials10k
		}
		if err := b.latency(ctx, label, trials, false); err != nil {
			return err
		}
		if b.o.knetAlone && !b.kpBehind {
			if err := b.latencyKnetAlone(ctx, label, trials); err != nil {
				return err
			}
		}
		if n == sizes[len(sizes)-1] {
			r, err := b.connRates(ctx, label)
			if err != nil {
				return err
			}
			b.tbl.ratio(fmt.Sprintf("conn/s ratio %s / 10 Services", label), r[0]/rate10[0], r[1]/rate10[1], "goal ≥ 0.9 for knet")
			b.memory(label)
		}
	}
	return nil
}

func count(n int) string {
	if n >= 1000 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// bulk creates Services [from, to) with both proxies running and measures, from outside, the
// time from the last object created until each proxy has the last Service in its map.
func (b *bench) bulk(ctx context.Context, from, to int, label string) error {
	before, err := b.kp.scrape(ctx)
	if err != nil {
		return err
	}
	logAt := b.kp.logOffset()
	res, err := b.objs.createRange(ctx, from, to, b.o.apiWorkers)
	if err != nil {
		return err
	}
	created := res.last.Sub(res.first)
	logf("created %d Services + EndpointSlices in %.1fs; waiting for both proxies", to-from, created.Seconds())
	ip := b.objs.clusterIP(res.lastIndex)
	at, err := b.waitBoth(ctx, ip, servicePort, b.o.bound)
	if err != nil {
		return err
	}
	// The last Service being there must mean all are: spot-check a sample.
	for _, p := range b.proxies() {
		for k := 0; k < 10; k++ {
			i := from + rand.IntN(to-from)
			if !p.hasServiceIP(ctx, b.objs.clusterIP(i), servicePort) {
				return fmt.Errorf("%s programmed the last Service but not %s (%s)", p.name, serviceName(i), b.objs.clusterIP(i))
			}
		}
	}
	after, err := b.kp.scrape(ctx)
	if err != nil {
		return err
	}
	if from == 0 {
		return nil // the first 10 Services only set the stage
	}
	b.tbl.dur(fmt.Sprintf("%s: last object created → programmed [poll]", label), at[0].Sub(res.last), at[1].Sub(res.last), goalIf(label == "10k", "goal knet/kp ≤ 0.5"))
	mean, n := after.meanSince(before, mSync)
	var longest time.Duration
	for _, d := range b.kp.kpSyncsSince(logAt) {
		longest = max(longest, d)
	}
	b.tbl.text(fmt.Sprintf("%s: syncs while creating [metric; max from log]", label), "n/a",
		fmt.Sprintf("%d, mean %s, max %s", n, fmtDur(mean), fmtDur(longest)),
		fmt.Sprintf("objects created in %.1f s", created.Seconds()))
	return nil
}

// waitBoth waits for ip:port in both proxies' maps, concurrently.
func (b *bench) waitBoth(ctx context.Context, ip string, port int, timeout time.Duration) ([2]time.Time, error) {
	var at [2]time.Time
	errs := make(chan error, 2)
	for i, p := range b.proxies() {
		go func() {
			t, err := p.waitProgrammed(ctx, ip, port, b.o.poll, timeout)
			at[i] = t
			errs <- err
		}()
	}
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return at, first
}

// restartSync restarts each proxy in turn on an empty table (the other proxy idles) and
// measures process start → last Service programmed: informer list + one full sync. For
// kube-proxy it also reads the duration of that full sync from its own histogram.
func (b *bench) restartSync(ctx context.Context, last int, label string) error {
	ip := b.objs.clusterIP(last)
	var d, firstSync [2]time.Duration
	kpFull := "?"
	for i, p := range b.proxies() {
		logf("restarting %s on an empty table", p.name)
		p.stop()
		p.deleteTable()
		logAt := p.logOffset()
		if err := p.start(); err != nil {
			return err
		}
		t, err := p.waitProgrammed(ctx, ip, servicePort, b.o.poll, b.o.bound)
		if err != nil && p == b.kp && ctx.Err() == nil && p.exited() == nil {
			// Bounded, not fatal: report "> bound" and measure knet alone for the rest of this size.
			logf("kube-proxy did not program %d Services within %s; leaving it out of this size", last+1, b.o.bound)
			b.kpBehind = true
			d[i], firstSync[i] = b.o.bound, b.o.bound
			kpFull = "> " + fmtDur(b.o.bound)
			continue
		}
		if err != nil {
			return err
		}
		d[i] = t.Sub(p.started)
		if p == b.knet {
			if synced, ok := p.knetCachesSynced(logAt); ok {
				firstSync[i] = t.Sub(synced)
			}
		}
		if p.metrics != "" && !b.kpBehind {
			// The histogram is updated right after the transaction; give it a moment.
			for range 50 {
				s, err := p.scrape(ctx)
				if err == nil && s[mFull+"_count"] >= 1 {
					full, n := s.meanSince(promSnapshot{}, mFull)
					firstSync[i] = full
					kpFull = fmtDur(full)
					if n > 1 {
						logf("kube-proxy made %d full syncs after restart; the table shows their mean", n)
					}
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	note := goalIf(label == "10k", "goal knet/kp ≤ 0.5")
	if b.kpBehind {
		note = fmt.Sprintf("kube-proxy unfinished after %s: its figure is a lower bound", fmtDur(b.o.bound))
	}
	b.tbl.dur(fmt.Sprintf("%s: restart → all programmed [poll]", label), d[0], d[1], note)
	if kpFull == "?" {
		firstSync[1] = 0
	}
	b.tbl.dur(fmt.Sprintf("%s: first full sync [knet: log+poll; kp: metric]", label), firstSync[0], firstSync[1], note)
	return nil
}

// latency creates one Service with its EndpointSlice per trial and measures, from the start of
// the Service create call, the first successful TCP connection to ClusterIP:port from inside
// each proxy's namespace (both probe at once: same objects, same moment).
// latencyKnetAlone runs the latency trials for knet alone, with kube-proxy paused: kube-proxy gets
// every new Service at the same moment as knet and answers with a sync of seconds of CPU, so in
// the side-by-side trials knet's syncs share the two CPUs with it.
func (b *bench) latencyKnetAlone(ctx context.Context, label string, trials int) error {
	pid := b.kp.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pause kube-proxy: %w", err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	logf("kube-proxy paused; %d trials for knet alone", trials)
	return b.latency(ctx, label, trials, true)
}

func (b *bench) latency(ctx context.Context, label string, trials int, knetAlone bool) error {
	if knetAlone {
		label += " (kube-proxy paused)"
	}
	var lat, fromCreated [2][]time.Duration
	var api []time.Duration // the two create calls, part of every trial's latency
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, err := startEventWatch(watchCtx, b.client)
	if err != nil {
		return err
	}
	mon, err := startNftMonitor(b.st, b.knet.netns, b.knet.table)
	if err != nil {
		return err
	}
	defer mon.stop()
	var traces []trialTrace
	var t0s []time.Time
	for t := 0; t < trials; t++ {
		ipAddr := b.l.ServiceCIDR.Addr()
		for range b.nextIP {
			ipAddr = ipAddr.Next()
		}
		b.nextIP++
		ip := ipAddr.String()
		addr := netip.AddrPortFrom(ipAddr, servicePort).String()
		var probes [2]*probe
		for i, p := range b.proxies() {
			if p == b.kp && (b.kpBehind || knetAlone) {
				continue
			}
			pr, err := startProbe(ctx, b.st, p.netns, addr, 5*time.Minute)
			if err != nil {
				return err
			}
			probes[i] = pr
		}
		name := fmt.Sprintf("lat-%s-%02d", strings.ToLower(count0(label)), t)
		if knetAlone {
			name = fmt.Sprintf("lat-%s-alone-%02d", strings.ToLower(count0(label)), t)
		}
		var tr trialTrace
		t0 := time.Now()
		if _, err := b.objs.createService(ctx, name, ip); err != nil {
			return err
		}
		tr.svcCreated = time.Now()
		if err := b.objs.createSlice(ctx, name, b.nextIP); err != nil {
			return err
		}
		tr.sliceCreated = time.Now()
		api = append(api, tr.sliceCreated.Sub(t0))
		for i, pr := range probes {
			if pr == nil {
				lat[i] = append(lat[i], 0)
				continue
			}
			r := <-pr.result
			if r.err != nil {
				return r.err
			}
			lat[i] = append(lat[i], r.at.Sub(t0))
			// The probe may win before the create call's response arrives; count that as 0.
			fromCreated[i] = append(fromCreated[i], max(0, r.at.Sub(tr.sliceCreated)))
		}
		tr.svcEvent, tr.sliceEvent = events.at("Service", name), events.at("EndpointSlice", name+"-bench")
		tr.rejectCommitted, tr.programmed = mon.at("no-endpoint-services", ip), mon.at("service-ips", ip)
		traces = append(traces, tr)
		t0s = append(t0s, t0)
		logf("%s trial %d/%d: knet %s, kube-proxy %s", label, t+1, trials, fmtDur(lat[0][t]), fmtDur(lat[1][t]))
		// Arrivals at random phases of kube-proxy's 1 s minimum sync period.
		time.Sleep(time.Second + rand.N(500*time.Millisecond))
	}
	for _, q := range []int{50, 99} {
		b.tbl.dur(fmt.Sprintf("%s: new Service → first connection p%d (%d trials)", label, q, trials),
			percentile(lat[0], q), percentile(lat[1], q), goalIf(label == "1k" && q == 99, "goal ≤ 100 ms for knet"))
	}
	b.tbl.text(fmt.Sprintf("%s: of which Service + EndpointSlice create calls, p50 / p99", label),
		fmtDur(percentile(api, 50))+" / "+fmtDur(percentile(api, 99)), "same", "the API server's share, included above")
	for _, q := range []int{50, 99} {
		b.tbl.dur(fmt.Sprintf("%s: both objects created → first connection p%d", label, q),
			percentile(fromCreated[0], q), percentile(fromCreated[1], q), goalIf(q == 50, "from the EndpointSlice create call's return"))
	}
	b.traceRows(label, t0s, traces, lat[0])
	return nil
}

// traceRows prints, for knet, the median time from the Service create call to each step of a
// trial; the p99 trial's own steps show where a slow trial lost its time.
func (b *bench) traceRows(label string, t0s []time.Time, traces []trialTrace, lat []time.Duration) {
	steps := []struct {
		name string
		at   func(trialTrace) time.Time
	}{
		{"Service created", func(t trialTrace) time.Time { return t.svcCreated }},
		{"Service event", func(t trialTrace) time.Time { return t.svcEvent }},
		{"reject committed", func(t trialTrace) time.Time { return t.rejectCommitted }},
		{"EndpointSlice created", func(t trialTrace) time.Time { return t.sliceCreated }},
		{"EndpointSlice event", func(t trialTrace) time.Time { return t.sliceEvent }},
		{"rules committed", func(t trialTrace) time.Time { return t.programmed }},
	}
	offset := func(i int, at time.Time) string {
		if at.IsZero() {
			return "?"
		}
		return fmtDur(at.Sub(t0s[i]))
	}
	var med, worst []string
	slowest := 0
	for i := range lat {
		if lat[i] > lat[slowest] {
			slowest = i
		}
	}
	for _, s := range steps {
		var ds []time.Duration
		for i, t := range traces {
			if at := s.at(t); !at.IsZero() {
				ds = append(ds, at.Sub(t0s[i]))
			}
		}
		med = append(med, s.name+" "+fmtDur(percentile(ds, 50)))
		worst = append(worst, s.name+" "+offset(slowest, s.at(traces[slowest])))
	}
	med = append(med, "connected "+fmtDur(percentile(lat, 50)))
	worst = append(worst, "connected "+fmtDur(lat[slowest]))
	b.tbl.text(fmt.Sprintf("%s: knet trial steps, median [trace]", label), strings.Join(med, ", "), "", "")
	b.tbl.text(fmt.Sprintf("%s: knet slowest trial's steps [trace]", label), strings.Join(worst, ", "), "", "")
}

// count0 is the size part of a label ("1k" of "1k (kube-proxy paused)").
func count0(label string) string {
	n, _, _ := strings.Cut(label, " ")
	return n
}

func goalIf(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

// connRates runs the closed-loop client through Service 0's ClusterIP in rounds of one second,
// alternating between the proxies so that load from elsewhere on the machine hits both alike,
// and reports each proxy's median round.
func (b *bench) connRates(ctx context.Context, label string) ([2]float64, error) {
	var r [2]float64
	if err := b.settle(ctx); err != nil {
		return r, err
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr(b.objs.clusterIP(0)), servicePort).String()
	rounds := max(1, int(b.o.connSeconds/time.Second))
	logf("connection rate at %s Services: %d alternating rounds of 1 s per proxy", label, rounds)
	var rates [2][]float64
	for range rounds {
		for i, p := range b.proxies() {
			if p == b.kp && b.kpBehind {
				rates[i] = append(rates[i], 0)
				continue
			}
			rate, failed, err := connRate(ctx, p.netns, addr, b.o.connWorkers, time.Second)
			if err != nil {
				return r, err
			}
			if failed > 0 {
				logf("%s: %d failed connections", p.name, failed)
			}
			rates[i] = append(rates[i], rate)
		}
	}
	spread := func(v []float64) string {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return fmt.Sprintf("%.0f–%.0f", s[0], s[len(s)-1])
	}
	for i := range r {
		r[i] = median(rates[i])
	}
	b.tbl.num(fmt.Sprintf("%s Services: new connections/s, median of %d×1 s (%d clients)", label, rounds, b.o.connWorkers), r[0], r[1], "%.0f",
		fmt.Sprintf("range knet %s, kp %s", spread(rates[0]), spread(rates[1])))
	return r, nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// settle waits until kube-proxy has not synced for 3 s (up to 3 minutes), so a conn-rate run
// does not share the CPUs with a sync still in progress. knet exposes no sync counter; it is
// quiet once its map is current, which the callers have already waited for.
func (b *bench) settle(ctx context.Context) error {
	deadline := time.Now().Add(3 * time.Minute)
	prev, err := b.kp.scrape(ctx)
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Second):
		}
		cur, err := b.kp.scrape(ctx)
		if err != nil {
			return err
		}
		if cur[mSync+"_count"] == prev[mSync+"_count"] {
			return nil
		}
		prev = cur
	}
	logf("kube-proxy still syncing after 3 minutes; measuring anyway")
	return nil
}

func (b *bench) memory(label string) {
	kr, kh := b.knet.memory()
	pr, ph := b.kp.memory()
	b.tbl.text(fmt.Sprintf("%s: proxy RSS with its child processes (peak)", label), fmt.Sprintf("%s (%s)", mib(kr), mib(kh)), fmt.Sprintf("%s (%s)", mib(pr), mib(ph)),
		fmt.Sprintf("ratio %.2f", float64(kr)/float64(pr)))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func percentile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// Nearest rank: with 20 trials p99 is the maximum.
	idx := (q*len(s) + 99) / 100
	return s[max(idx, 1)-1]
}
