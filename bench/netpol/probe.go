package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The modes below run inside the client pod's network namespace (started by podCommand through
// `nsenter --net=/proc/<holder>/ns/net`), so they see exactly what the pod sees, while their
// timestamps come from the host's clock like the orchestrator's.

// probeMain starts a TCP connect to addr every interval, each with its own short timeout, and
// prints one line per finished attempt: "<start unix ns> <1|0>". A dropped SYN therefore never
// hides the next attempt, and the orchestrator sees every state change within one interval.
func probeMain(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	addr := fs.String("addr", "", "server IP:port")
	interval := fs.Duration("interval", 5*time.Millisecond, "time between connection attempts")
	attempt := fs.Duration("attempt-timeout", 50*time.Millisecond, "timeout of one attempt")
	lifetime := fs.Duration("lifetime", 20*time.Minute, "exit after this long even if nobody stops the prober")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *lifetime)
	defer cancel()
	out := make(chan string, 1024)
	inflight := make(chan struct{}, 64)
	fmt.Println("ready")
	go func() {
		w := bufio.NewWriter(os.Stdout)
		for line := range out {
			w.WriteString(line)
			if len(out) == 0 {
				w.Flush()
			}
		}
	}()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		select {
		case inflight <- struct{}{}:
		default:
			continue // attempts are piling up (machine overloaded); skip this tick
		}
		go func() {
			defer func() { <-inflight }()
			start := time.Now()
			d := net.Dialer{Timeout: *attempt}
			ok := 0
			if c, err := d.Dial("tcp4", *addr); err == nil {
				ok = 1
				c.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT piling up in the pod
				c.Close()
			}
			out <- fmt.Sprintf("%d %d\n", start.UnixNano(), ok)
		}()
	}
}

// connrateMain runs a closed loop of workers, each opening a TCP connection to addr and
// closing it with a reset (SO_LINGER 0, so no TIME_WAIT limits the rate), for duration.
func connrateMain(args []string) error {
	fs := flag.NewFlagSet("connrate", flag.ExitOnError)
	addr := fs.String("addr", "", "server IP:port")
	workers := fs.Int("workers", 2, "concurrent connections")
	duration := fs.Duration("duration", 5*time.Second, "how long to run")
	_ = fs.Parse(args)
	var ok, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: time.Second}
			for time.Now().Before(deadline) {
				c, err := d.Dial("tcp4", *addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("conns %d failed %d seconds %.3f\n", ok.Load(), failed.Load(), time.Since(start).Seconds())
	return nil
}

// podNetns returns /proc/<holder>/ns/net of a pod, from the kubelet's state file
// (/var/lib/knet/<cluster>/nodes/<node>/kubelet/pods/<uid>/state.json, see
// internal/kubelet/state.go): the holder process owns the pod's network namespace.
func podNetns(cluster, node, uid string) (string, error) {
	path := filepath.Join("/var/lib/knet", cluster, "nodes", node, "kubelet", "pods", uid, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read pod sandbox state (is the pod running on %s?): %w", node, err)
	}
	var st struct {
		Holder *struct {
			PID int `json:"pid"`
		} `json:"holder"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return "", fmt.Errorf("parse %s: %w", path, err)
	}
	if st.Holder == nil || st.Holder.PID <= 0 {
		return "", fmt.Errorf("%s names no holder process yet", path)
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", st.Holder.PID)
	if _, err := os.Stat(ns); err != nil {
		return "", fmt.Errorf("pod holder %d is gone: %w", st.Holder.PID, err)
	}
	return ns, nil
}

// podCommand runs this binary in mode inside the network namespace netns. The child gets
// SIGKILL if the orchestrator dies, so no prober outlives the run.
func podCommand(ctx context.Context, netns, mode string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns, "--", self, mode}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// attempt is one connection attempt of the prober.
type attempt struct {
	start time.Time
	ok    bool
}

// prober is a running probeMain whose results accumulate in memory.
type prober struct {
	cmd     *exec.Cmd
	timeout time.Duration // attempt timeout
	mu      sync.Mutex
	results []attempt
	done    chan struct{}
	stderr  strings.Builder
}

func startProber(ctx context.Context, netns, addr string, interval, attemptTimeout time.Duration) (*prober, error) {
	p := &prober{timeout: attemptTimeout, done: make(chan struct{})}
	p.cmd = podCommand(ctx, netns, "probe", "-addr", addr, "-interval", interval.String(), "-attempt-timeout", attemptTimeout.String())
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prober: %w", err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		return nil, fmt.Errorf("prober in %s did not start: %s", netns, p.stderr.String())
	}
	go func() {
		defer close(p.done)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				continue
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.results = append(p.results, attempt{time.Unix(0, ns), f[1] == "1"})
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
	}()
	return p, nil
}

// stop kills the prober (the process this run started, by its PID) and waits for it.
func (p *prober) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// transition is the moment the prober's view switched to a state and stayed there.
type transition struct {
	at     time.Time // start of the first attempt of the final run of want-state attempts
	flips  int       // attempts in the wanted state before that run (noise, e.g. a timeout under load)
	before int       // attempts since `since` that were still in the old state
}

// waitState waits until every attempt started after `since` from some point on is in state
// want (true = connected) for at least stable and minRun attempts, and returns that point.
// Attempts younger than the attempt timeout plus a margin are not judged yet, since a failure
// is only known once its timeout has passed.
func (p *prober) waitState(ctx context.Context, want bool, since time.Time, stable time.Duration, timeout time.Duration) (transition, error) {
	const minRun = 20
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-ctx.Done():
			return transition{}, ctx.Err()
		case <-p.done:
			return transition{}, fmt.Errorf("prober exited: %s", p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		judged := time.Now().Add(-p.timeout - 100*time.Millisecond)
		p.mu.Lock()
		var rs []attempt
		for i := len(p.results) - 1; i >= 0 && !p.results[i].start.Before(since.Add(-time.Second)); i-- {
			if r := p.results[i]; !r.start.Before(since) && !r.start.After(judged) {
				rs = append(rs, r)
			}
		}
		p.mu.Unlock()
		sort.Slice(rs, func(i, j int) bool { return rs[i].start.Before(rs[j].start) })
		last := -1 // last attempt in the old state
		for i, r := range rs {
			if r.ok != want {
				last = i
			}
		}
		run := rs[last+1:]
		if len(run) >= minRun && run[len(run)-1].start.Sub(run[0].start) >= stable {
			tr := transition{at: run[0].start}
			for _, r := range rs[:last+1] {
				if r.ok == want {
					tr.flips++
				} else {
					tr.before++
				}
			}
			return tr, nil
		}
		if time.Now().After(deadline) {
			return transition{}, fmt.Errorf("client did not see the server %s within %v (%d attempts judged, %d in the wanted state at the end)",
				stateName(want), timeout, len(rs), len(run))
		}
	}
}

func stateName(connected bool) string {
	if connected {
		return "allowed"
	}
	return "blocked"
}

// connRate runs connrateMain in the pod's namespace and returns connections per second.
func connRate(ctx context.Context, netns, addr string, workers int, d time.Duration) (float64, int64, error) {
	out, err := podCommand(ctx, netns, "connrate", "-addr", addr, "-workers", strconv.Itoa(workers), "-duration", d.String()).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("connrate in %s: %w", netns, err)
	}
	var n, failed int64
	var secs float64
	if _, err := fmt.Sscanf(string(out), "conns %d failed %d seconds %f", &n, &failed, &secs); err != nil || secs == 0 {
		return 0, 0, fmt.Errorf("connrate in %s: unexpected output %q", netns, out)
	}
	return float64(n) / secs, failed, nil
}
