package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proxyProc is one service proxy under test, running alone in its own network namespace.
type proxyProc struct {
	name    string // column title
	netns   string
	table   string // nftables table (family ip) the proxy owns
	argv    []string
	logPath string
	metrics string // kube-proxy's metrics URL inside its namespace, "" for knet
	st      *state

	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
}

func (p *proxyProc) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s log: %w", p.name, err)
	}
	fmt.Fprintf(logf, "\n=== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.argv, " "))
	// `ip netns exec` execs the proxy after setns, so the PID we get is the proxy's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.netns}, p.argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C on the terminal reaches only the benchmark, which then stops
	// the proxies itself, in order, by PID.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	// The command line changes once `ip` has exec'd the proxy; record it after that.
	for i := 0; i < 100 && !strings.HasPrefix(cmdline(cmd.Process.Pid), p.argv[0]); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	p.st.addProc(cmd.Process.Pid)
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

func (p *proxyProc) stop() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.st.removeProc(p.cmd.Process.Pid)
	p.cmd = nil
}

func (p *proxyProc) exited() error {
	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.name)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); see %s", p.name, p.cmd.ProcessState, p.logPath)
	default:
		return nil
	}
}

// deleteTable removes the proxy's table so that the next start must program everything.
func (p *proxyProc) deleteTable() {
	_ = exec.Command("ip", "netns", "exec", p.netns, "nft", "delete", "table", "ip", p.table).Run()
}

// hasServiceIP reports whether the proxy's verdict map service-ips holds ip . tcp . port, i.e.
// the ClusterIP is programmed with endpoints. knet and kube-proxy (nftables mode) both name the
// map service-ips and key it ipv4_addr . inet_proto . inet_service, and both put a Service port
// there only once it has ready endpoints. `nft get element` asks the kernel for one element,
// so a poll stays cheap at 10k Services.
func (p *proxyProc) hasServiceIP(ctx context.Context, ip string, port int) bool {
	elem := fmt.Sprintf("{ %s . tcp . %d }", ip, port)
	return exec.CommandContext(ctx, "ip", "netns", "exec", p.netns, "nft", "get", "element", "ip", p.table, "service-ips", elem).Run() == nil
}

// waitProgrammed polls every interval until ip:port is in the proxy's map and returns the time
// the successful poll started, so the error is at most one interval plus one nft call.
func (p *proxyProc) waitProgrammed(ctx context.Context, ip string, port int, interval, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		t := time.Now()
		if p.hasServiceIP(ctx, ip, port) {
			return t, nil
		}
		if err := p.exited(); err != nil {
			return time.Time{}, err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: %s:%d not programmed after %v: %w", p.name, ip, port, timeout, ctx.Err())
		case <-time.After(time.Until(t.Add(interval))):
		}
	}
}

// memory is the RSS and peak RSS of the proxy with its running children: knet's resident
// `nft -i` counts (kube-proxy's one-shot nft runs are gone between syncs). The peak is the sum
// of each process's peak.
func (p *proxyProc) memory() (rss, hwm int64) {
	if p.cmd == nil {
		return 0, 0
	}
	pid := p.cmd.Process.Pid
	rss, hwm = procMemory(pid)
	for _, child := range procChildren(pid) {
		r, h := procMemory(child)
		rss, hwm = rss+r, hwm+h
	}
	return rss, hwm
}

// promSnapshot holds the kube-proxy sync histograms' sums and counts.
type promSnapshot map[string]float64

const (
	mSync    = "kubeproxy_sync_proxy_rules_duration_seconds"
	mFull    = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	mPartial = "kubeproxy_sync_partial_proxy_rules_duration_seconds"
)

// scrape reads kube-proxy's metrics from inside its namespace (they listen on its loopback).
func (p *proxyProc) scrape(ctx context.Context) (promSnapshot, error) {
	if p.metrics == "" {
		return nil, errors.New("no metrics endpoint")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.netns, "curl", "-sf", p.metrics).Output()
	if err != nil {
		return nil, fmt.Errorf("scrape %s metrics: %w", p.name, err)
	}
	snap := promSnapshot{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		// kube-proxy runs one proxier per IP family; the benchmark's Services are IPv4.
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		name, labels, _ := strings.Cut(f[0], "{")
		if labels != "" && labels != `ip_family="IPv4"}` {
			continue
		}
		for _, m := range []string{mSync, mFull, mPartial} {
			if name == m+"_sum" || name == m+"_count" {
				v, _ := strconv.ParseFloat(f[1], 64)
				snap[name] = v
			}
		}
	}
	return snap, nil
}

// meanSince is the mean duration of the syncs of histogram m between two snapshots, and their number.
func (s promSnapshot) meanSince(prev promSnapshot, m string) (time.Duration, int) {
	n := s[m+"_count"] - prev[m+"_count"]
	if n <= 0 {
		return 0, 0
	}
	return time.Duration((s[m+"_sum"] - prev[m+"_sum"]) / n * float64(time.Second)), int(n)
}

// logOffset is the current size of the proxy's log, to read only what a phase added.
func (p *proxyProc) logOffset() int64 {
	fi, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

var kpSyncLine = regexp.MustCompile(`"SyncProxyRules complete" ipFamily="IPv4" elapsed="([^"]+)"`)

// kpSyncsSince returns the durations of kube-proxy's IPv4 syncs logged after offset (its -v=2
// log has one line per sync; the histograms cannot give a maximum).
func (p *proxyProc) kpSyncsSince(offset int64) []time.Duration {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil
	}
	var out []time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := kpSyncLine.FindStringSubmatch(sc.Text()); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				out = append(out, d)
			}
		}
	}
	return out
}

// knetCachesSynced returns the time of knet's "caches synced" log line after offset: the moment
// its informers have listed everything and the first (full) sync starts.
func (p *proxyProc) knetCachesSynced(offset int64) (time.Time, bool) {
	f, err := os.Open(p.logPath)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return time.Time{}, false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "caches synced") || !strings.HasPrefix(line, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
