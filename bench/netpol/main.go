// Command netpol benchmarks knet's NetworkPolicy enforcement on a real `knet up` cluster with
// two nodes: how long after a NetworkPolicy is created a client's new connections are blocked,
// how long after it is deleted they pass again, and how many new connections per second the
// client gets with 1000 other NetworkPolicies present versus none. It prints a table and asserts
// nothing.
//
// It owns the API namespace "npbench" (pods npb-server, npb-server2, npb-client, other-N and the
// policies) and the processes it starts inside the client pod's network namespace (a prober and
// a connection-rate client, entered with nsenter from the host so their timestamps come from
// the host's clock). It never touches kernel state itself; bench/netpol/run.sh starts and removes
// the cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	mode, args := "run", os.Args[1:]
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		mode, args = args[0], args[1:]
	}
	var err error
	switch mode {
	case "run":
		err = runMain(args)
	case "probe":
		err = probeMain(args)
	case "connrate":
		err = connrateMain(args)
	default:
		err = fmt.Errorf("unknown mode %q: use run (default), probe or connrate", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "npbench:", err)
		os.Exit(1)
	}
}

type options struct {
	cluster      string
	trials       int
	trialsBulk   int
	bulk         int
	workers      int
	interval     time.Duration
	attemptTO    time.Duration
	stable       time.Duration
	connRounds   int
	connDuration time.Duration
	connWorkers  int
}

func runMain(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.cluster, "cluster", "npb", "knet cluster with at least 2 nodes (started by run.sh)")
	fs.IntVar(&o.trials, "trials", 20, "create/delete latency trials without other policies")
	fs.IntVar(&o.trialsBulk, "trials-bulk", 10, "create/delete latency trials with the bulk policies present (0 = skip)")
	fs.IntVar(&o.bulk, "bulk", 1000, "number of other NetworkPolicies for the connection-rate comparison")
	fs.IntVar(&o.workers, "api-workers", 8, "parallel clients creating the bulk policies")
	fs.DurationVar(&o.interval, "interval", 5*time.Millisecond, "prober: time between connection attempts")
	fs.DurationVar(&o.attemptTO, "attempt-timeout", 50*time.Millisecond, "prober: timeout of one connection attempt")
	fs.DurationVar(&o.stable, "stable", 300*time.Millisecond, "a new state counts once the prober saw only it for this long")
	fs.IntVar(&o.connRounds, "conn-rounds", 10, "connection-rate round pairs (server, server2) per configuration; even, so each goes first equally often")
	fs.DurationVar(&o.connDuration, "conn-duration", time.Second, "duration of one connection-rate round")
	fs.IntVar(&o.connWorkers, "conn-workers", 2, "concurrent connections of the closed-loop client")
	_ = fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := b.measure(ctx); err != nil {
		return err
	}
	b.tbl.print(os.Stdout)
	return nil
}

type bench struct {
	o       options
	client  kubernetes.Interface
	netns   string // the client pod's network namespace, /proc/<holder>/ns/net
	server  string // server pod IP:port (the pod the policies select)
	server2 string // a second server pod on the same node that no policy selects
	tbl     table
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (b *bench) setup(ctx context.Context) error {
	dir := filepath.Join("/var/lib/knet", b.o.cluster)
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
	if err != nil {
		return fmt.Errorf("load kubeconfig of cluster %s (is it up? `bin/knet up --name %s --nodes 2`): %w", b.o.cluster, b.o.cluster, err)
	}
	rc.QPS, rc.Burst = 500, 1000
	if b.client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	nodes, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if len(nodes.Items) < 2 {
		return fmt.Errorf("cluster %s has %d nodes; the benchmark needs 2 (client and server on different nodes)", b.o.cluster, len(nodes.Items))
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	clientNode, serverNode := names[0], names[1]
	if err := ensureNamespace(ctx, b.client); err != nil {
		return err
	}
	pods := []*corev1.Pod{
		agnhostPod("npb-server", serverNode, "npb-server", "netexec", fmt.Sprintf("--http-port=%d", serverPort), "--udp-port=-1"),
		agnhostPod("npb-server2", serverNode, "npb-server2", "netexec", fmt.Sprintf("--http-port=%d", serverPort), "--udp-port=-1"),
		agnhostPod("npb-client", clientNode, "npb-client", "pause"),
	}
	for k := range otherApps {
		pods = append(pods, agnhostPod(fmt.Sprintf("other-%d", k), names[k%2], fmt.Sprintf("other-%d", k), "pause"))
	}
	logf("creating %d pods (server on %s, client on %s)", len(pods), serverNode, clientNode)
	ready, err := createPods(ctx, b.client, pods, 3*time.Minute)
	if err != nil {
		return err
	}
	cl := ready["npb-client"]
	if b.netns, err = podNetns(b.o.cluster, clientNode, string(cl.UID)); err != nil {
		return err
	}
	b.server = net.JoinHostPort(ready["npb-server"].Status.PodIP, strconv.Itoa(serverPort))
	b.server2 = net.JoinHostPort(ready["npb-server2"].Status.PodIP, strconv.Itoa(serverPort))
	logf("client %s (netns %s) → server %s, server2 %s", cl.Status.PodIP, b.netns, b.server, b.server2)
	return nil
}

// await starts a prober, waits for the client to see state connected, and stops it. The
// prober's own traffic must not disturb the connection-rate rounds, so it never runs with them.
func (b *bench) await(ctx context.Context, connected bool, since time.Time) error {
	p, err := startProber(ctx, b.netns, b.server, b.o.interval, b.o.attemptTO)
	if err != nil {
		return err
	}
	defer p.stop()
	_, err = p.waitState(ctx, connected, since, b.o.stable, time.Minute)
	return err
}

func (b *bench) measure(ctx context.Context) error {
	fmt.Printf("load before: %s", loadavg())
	// Baseline connection rate, then latency trials with nothing else present.
	if err := b.await(ctx, true, time.Now()); err != nil {
		return fmt.Errorf("client cannot reach the server before any policy: %w", err)
	}
	none1, err := b.connRounds(ctx, "no policies")
	if err != nil {
		return err
	}
	if err := b.latencyTrials(ctx, "0 other policies", b.o.trials); err != nil {
		return err
	}

	// One policy: the server is isolated and the client admitted. The deny policy first makes
	// the client blocked, so "allowed again" proves the allow policy is programmed.
	if err := b.create(ctx, denyServer()); err != nil {
		return err
	}
	if err := b.await(ctx, false, time.Now()); err != nil {
		return err
	}
	if err := b.create(ctx, allowClient()); err != nil {
		return err
	}
	if err := b.await(ctx, true, time.Now()); err != nil {
		return err
	}
	if err := b.delete(ctx, denyPolicy); err != nil {
		return err
	}
	time.Sleep(time.Second)
	one, err := b.connRounds(ctx, "1 policy (allows the client)")
	if err != nil {
		return err
	}

	// Bulk policies. Blocked first (deny, allow removed), then the bulk policies, then the allow
	// policy again: the client being allowed again means the node has synced a state that
	// includes every bulk policy (informer events arrive in resourceVersion order).
	if err := b.create(ctx, denyServer()); err != nil {
		return err
	}
	if err := b.delete(ctx, allowPolicy); err != nil {
		return err
	}
	if err := b.await(ctx, false, time.Now()); err != nil {
		return err
	}
	start := time.Now()
	if err := createBulk(ctx, b.client, b.o.bulk, b.o.workers); err != nil {
		return err
	}
	created := time.Since(start)
	if err := b.create(ctx, allowClient()); err != nil {
		return err
	}
	if err := b.await(ctx, true, time.Now()); err != nil {
		return err
	}
	logf("%d bulk policies created in %v and programmed after %v", b.o.bulk, created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	b.tbl.add(fmt.Sprintf("create %d policies → client's allow policy in force", b.o.bulk), fmtDur(time.Since(start)), "",
		fmt.Sprintf("API creates took %s (%d workers)", fmtDur(created), b.o.workers))
	if err := b.delete(ctx, denyPolicy); err != nil {
		return err
	}
	time.Sleep(time.Second)
	bulk, err := b.connRounds(ctx, fmt.Sprintf("%d policies + 1 allowing the client", b.o.bulk))
	if err != nil {
		return err
	}
	if b.o.trialsBulk > 0 {
		// The server must be unselected for the deny trials: remove the allow policy.
		if err := b.delete(ctx, allowPolicy); err != nil {
			return err
		}
		if err := b.latencyTrials(ctx, fmt.Sprintf("%d other policies", b.o.bulk), b.o.trialsBulk); err != nil {
			return err
		}
		if err := b.create(ctx, allowClient()); err != nil {
			return err
		}
	}

	// Back to none: same canary, so the deletes are known to be programmed.
	if err := deleteBulk(ctx, b.client); err != nil {
		return fmt.Errorf("delete bulk policies: %w", err)
	}
	if err := b.delete(ctx, allowPolicy); err != nil {
		return err
	}
	if err := b.create(ctx, denyServer()); err != nil {
		return err
	}
	if err := b.await(ctx, false, time.Now()); err != nil {
		return err
	}
	t := time.Now()
	if err := b.delete(ctx, denyPolicy); err != nil {
		return err
	}
	if err := b.await(ctx, true, t); err != nil {
		return err
	}
	time.Sleep(time.Second)
	none2, err := b.connRounds(ctx, "no policies (again, after the bulk run)")
	if err != nil {
		return err
	}
	base := (none1.server + none2.server) / 2
	b.tbl.add(fmt.Sprintf("conn/s ratio %d+1 policies / none", b.o.bulk), fmt.Sprintf("%.3f", bulk.server/base), "≥ 0.9",
		"server; none = mean of both no-policy runs (phases minutes apart: load drift included)")
	b.tbl.add("conn/s ratio 1 policy / none", fmt.Sprintf("%.3f", one.server/base), "", "as above")
	noneSame := (none1.pair + none2.pair) / 2
	b.tbl.add(fmt.Sprintf("conn/s server/server2 at %d+1 ÷ same at none", b.o.bulk), fmt.Sprintf("%.3f", bulk.pair/noneSame), "≥ 0.9",
		"median pair ratios: policed vs unpoliced under the same load, normalised by the no-policy runs")
	b.tbl.add("conn/s server/server2 at 1 ÷ same at none", fmt.Sprintf("%.3f", one.pair/noneSame), "", "as above")
	// Both no-policy runs measure the same thing; how far apart they are is the noise floor of
	// every conn/s ratio above on this machine at this time.
	b.tbl.add("noise floor: server/server2, none run 2 ÷ run 1", fmt.Sprintf("%.3f", none2.pair/none1.pair), "≈ 1",
		"a ratio above is meaningful only if it differs from 1 by more than this one does")
	fmt.Printf("load after: %s", loadavg())
	return nil
}

func (b *bench) create(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	if _, err := b.client.NetworkingV1().NetworkPolicies(benchNamespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create policy %s: %w", np.Name, err)
	}
	return nil
}

func (b *bench) delete(ctx context.Context, name string) error {
	if err := b.client.NetworkingV1().NetworkPolicies(benchNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete policy %s: %w", name, err)
	}
	return nil
}

// latencyTrials creates and deletes the deny policy n times while one prober runs, and adds
// p50/p99 rows for both directions.
func (b *bench) latencyTrials(ctx context.Context, label string, n int) error {
	p, err := startProber(ctx, b.netns, b.server, b.o.interval, b.o.attemptTO)
	if err != nil {
		return err
	}
	defer p.stop()
	if _, err := p.waitState(ctx, true, time.Now(), b.o.stable, time.Minute); err != nil {
		return fmt.Errorf("client does not reach the server before the trials: %w", err)
	}
	var block, allow, apiCalls []time.Duration
	flips := 0
	for i := range n {
		// A random pause, so the policy changes do not fall into a fixed phase of the agent's
		// rate-limited sync loop.
		time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
		t0 := time.Now()
		if err := b.create(ctx, denyServer()); err != nil {
			return err
		}
		apiCalls = append(apiCalls, time.Since(t0))
		tr, err := p.waitState(ctx, false, t0, b.o.stable, 30*time.Second)
		if err != nil {
			return fmt.Errorf("trial %d (%s), after create: %w", i, label, err)
		}
		block = append(block, tr.at.Sub(t0))
		flips += tr.flips

		time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
		t0 = time.Now()
		if err := b.delete(ctx, denyPolicy); err != nil {
			return err
		}
		apiCalls = append(apiCalls, time.Since(t0))
		tr, err = p.waitState(ctx, true, t0, b.o.stable, 30*time.Second)
		if err != nil {
			return fmt.Errorf("trial %d (%s), after delete: %w", i, label, err)
		}
		allow = append(allow, tr.at.Sub(t0))
		flips += tr.flips
		logf("trial %d (%s): blocked after %v, allowed again after %v", i, label, block[i].Round(time.Millisecond/10), allow[i].Round(time.Millisecond/10))
	}
	note := fmt.Sprintf("n=%d; API call p50 %s", n, fmtDur(percentile(apiCalls, 50)))
	if flips > 0 {
		note += fmt.Sprintf("; %d stray attempts ignored", flips)
	}
	b.tbl.add(fmt.Sprintf("create → first blocked, p50 / p99 (%s)", label),
		fmtDur(percentile(block, 50))+" / "+fmtDur(percentile(block, 99)), "≤ 100 ms", note)
	b.tbl.add(fmt.Sprintf("delete → first allowed, p50 / p99 (%s)", label),
		fmtDur(percentile(allow, 50))+" / "+fmtDur(percentile(allow, 99)), "≤ 100 ms",
		fmt.Sprintf("min %s, max %s", fmtDur(slicesMin(allow)), fmtDur(slicesMax(allow))))
	return nil
}

// rates are the mean connection rates of one configuration: to the server (selected by the
// policies under test, if any) and to server2 (on the same node, never selected by a policy).
// pair is the median over round pairs of server/server2, the figure least moved by load spikes.
type rates struct{ server, server2, pair float64 }

// connRounds runs o.connRounds pairs of closed-loop rounds, alternating between the server and
// server2 (the order flips every pair), and returns the mean rates. Both targets see the same
// machine load at nearly the same time, so server/server2 is robust to the load of other work on
// the machine, which the absolute rates are not.
func (b *bench) connRounds(ctx context.Context, label string) (rates, error) {
	var r rates
	var each [2][]string
	var failed int64
	var pairs []float64
	for i := range b.o.connRounds {
		var got [2]float64
		targets := []int{0, 1}
		if i%2 == 1 {
			targets = []int{1, 0}
		}
		for _, t := range targets {
			addr := []string{b.server, b.server2}[t]
			rate, f, err := connRate(ctx, b.netns, addr, b.o.connWorkers, b.o.connDuration)
			if err != nil {
				return r, err
			}
			failed += f
			got[t] = rate
			each[t] = append(each[t], fmt.Sprintf("%.0f", rate))
			if t == 0 {
				r.server += rate / float64(b.o.connRounds)
			} else {
				r.server2 += rate / float64(b.o.connRounds)
			}
		}
		if got[1] > 0 {
			pairs = append(pairs, got[0]/got[1])
		}
	}
	sort.Float64s(pairs)
	if len(pairs) > 0 {
		r.pair = (pairs[(len(pairs)-1)/2] + pairs[len(pairs)/2]) / 2
	}
	note := fmt.Sprintf("server2 (never selected) %.0f; median pair ratio server/server2 %.3f", r.server2, r.pair)
	if failed > 0 {
		note += fmt.Sprintf("; %d failed connects", failed)
	}
	logf("conn/s with %s: server %.0f (%s), server2 %.0f (%s)", label, r.server, strings.Join(each[0], ", "), r.server2, strings.Join(each[1], ", "))
	b.tbl.add("new conn/s, "+label, fmt.Sprintf("%.0f", r.server), "", note)
	return r, nil
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// Nearest rank: with 20 samples p99 is the largest.
	k := (p*len(s) + 99) / 100
	return s[max(k-1, 0)]
}

func slicesMin(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0]
}

func slicesMax(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)-1]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b)
}
