package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The subcommands below run inside a network namespace (started with `ip netns exec NS
// proxybench <mode>`), so they measure what a client in that namespace sees.

// serveMain accepts TCP connections and closes them at once: the backend of every endpoint.
func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", fmt.Sprintf("0.0.0.0:%d", backendPort), "listen address")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp4", *addr)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return err
		}
		c.Close()
	}
}

// probeMain starts a TCP connect to addr every interval (each attempt with its own timeout, so
// a dropped SYN does not hide a later success) and prints the wall-clock time of the first
// connection that succeeds.
func probeMain(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	addr := fs.String("addr", "", "ClusterIP:port")
	interval := fs.Duration("interval", 5*time.Millisecond, "time between connection attempts")
	attempt := fs.Duration("attempt-timeout", time.Second, "timeout of one attempt")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up after")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	won := make(chan time.Time, 1)
	inflight := make(chan struct{}, 256)
	fmt.Println("ready")
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no connection to %s within %v", *addr, *timeout)
		case t := <-won:
			fmt.Printf("ok %d\n", t.UnixNano())
			return nil
		case <-tick.C:
		}
		select {
		case inflight <- struct{}{}:
		default:
			continue // too many attempts hanging; wait for one to finish
		}
		go func() {
			defer func() { <-inflight }()
			d := net.Dialer{Timeout: *attempt}
			c, err := d.DialContext(ctx, "tcp4", *addr)
			if err != nil {
				return
			}
			t := time.Now()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			select {
			case won <- t:
			default:
			}
		}()
	}
}

// connrateMain runs a closed loop of workers, each opening a TCP connection to addr and
// closing it with a reset (SO_LINGER 0, so no TIME_WAIT limits the rate), for duration.
func connrateMain(args []string) error {
	fs := flag.NewFlagSet("connrate", flag.ExitOnError)
	addr := fs.String("addr", "", "ClusterIP:port")
	workers := fs.Int("workers", 2, "concurrent connections")
	duration := fs.Duration("duration", 5*time.Second, "how long to run")
	_ = fs.Parse(args)
	var ok, failed atomic.Int64
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
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

// nsCommand runs this binary in mode inside network namespace ns.
func nsCommand(ctx context.Context, ns, mode string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, self, mode}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	return cmd
}

// probe is a running probeMain; result delivers the first connection time.
type probe struct {
	cmd    *exec.Cmd
	result chan probeResult
}

type probeResult struct {
	at  time.Time
	err error
}

func startProbe(ctx context.Context, st *state, ns, addr string, timeout time.Duration) (*probe, error) {
	cmd := nsCommand(ctx, ns, "probe", "-addr", addr, "-timeout", timeout.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	st.addProc(cmd.Process.Pid)
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		_ = cmd.Wait()
		st.removeProc(cmd.Process.Pid)
		return nil, fmt.Errorf("probe in %s did not start: %s", ns, stderr.String())
	}
	p := &probe{cmd: cmd, result: make(chan probeResult, 1)}
	go func() {
		var r probeResult
		if sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "ok" {
				ns, _ := strconv.ParseInt(f[1], 10, 64)
				r.at = time.Unix(0, ns)
			}
		}
		err := cmd.Wait()
		st.removeProc(cmd.Process.Pid)
		if r.at.IsZero() {
			r.err = fmt.Errorf("probe %s in %s: %v: %s", addr, ns, err, strings.TrimSpace(stderr.String()))
		}
		p.result <- r
	}()
	return p, nil
}

// connRate runs connrateMain in ns and returns connections per second.
func connRate(ctx context.Context, ns, addr string, workers int, d time.Duration) (float64, int64, error) {
	out, err := nsCommand(ctx, ns, "connrate", "-addr", addr, "-workers", strconv.Itoa(workers), "-duration", d.String()).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("connrate in %s: %w", ns, err)
	}
	var n, failed int64
	var secs float64
	if _, err := fmt.Sscanf(string(out), "conns %d failed %d seconds %f", &n, &failed, &secs); err != nil || secs == 0 {
		return 0, 0, fmt.Errorf("connrate in %s: unexpected output %q", ns, out)
	}
	return float64(n) / secs, failed, nil
}
