package kubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeResult is the outcome of one probe run.
type probeResult struct {
	ok     bool
	output string
}

// probeTarget is what a probe or hook acts on: the container attempt and the
// address the pod is reachable at from the node.
type probeTarget struct {
	proc      containerProcess
	env       []string
	podIP     string
	container *corev1.Container
}

// runHandler runs one probe or hook action. Probes and hooks share it, as in
// the kubelet.
func runHandler(ctx context.Context, t probeTarget, h corev1.ProbeHandler, timeout time.Duration) probeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		var out bytes.Buffer
		code, err := t.proc.Exec(ctx, execSpec{Args: h.Exec.Command, Env: t.env, Stdout: &out, Stderr: &out})
		if ctx.Err() != nil {
			return probeResult{output: fmt.Sprintf("command %q timed out after %s", strings.Join(h.Exec.Command, " "), timeout)}
		}
		if err != nil {
			return probeResult{output: err.Error()}
		}
		if code != 0 {
			return probeResult{output: fmt.Sprintf("command %q exited with %d: %s", strings.Join(h.Exec.Command, " "), code, trimOutput(out.String()))}
		}
		return probeResult{ok: true, output: out.String()}
	case h.HTTPGet != nil:
		return httpProbe(ctx, t, h.HTTPGet)
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, t.container)
		if err != nil {
			return probeResult{output: err.Error()}
		}
		host := h.TCPSocket.Host
		if host == "" {
			host = t.podIP
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return probeResult{output: fmt.Sprintf("dial tcp %s:%d: %v", host, port, err)}
		}
		conn.Close()
		return probeResult{ok: true}
	case h.GRPC != nil:
		return grpcProbe(ctx, t.podIP, h.GRPC)
	}
	return probeResult{output: "probe has no handler"}
}

func trimOutput(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 1024 {
		s = s[:1024] + "..."
	}
	return s
}

// resolvePort resolves a named port against the container's ports.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal <= 0 || p.IntVal > 65535 {
			return 0, fmt.Errorf("invalid port %d", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	if c != nil {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container has no port named %q", p.StrVal)
}

func httpProbe(ctx context.Context, t probeTarget, g *corev1.HTTPGetAction) probeResult {
	port, err := resolvePort(g.Port, t.container)
	if err != nil {
		return probeResult{output: err.Error()}
	}
	host := g.Host
	if host == "" {
		host = t.podIP
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	if pu, err := url.Parse(path); err == nil {
		u.Path, u.RawQuery = pu.Path, pu.RawQuery
	} else {
		u.Path = path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return probeResult{output: err.Error()}
	}
	req.Header.Set("User-Agent", "kube-probe/1.35")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{
			// The kubelet does not verify probe certificates.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
			DisableKeepAlives: true,
			Proxy:             nil,
		},
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return probeResult{output: err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 10*1024))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return probeResult{ok: true, output: string(body)}
	}
	return probeResult{output: fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)}
}

func grpcProbe(ctx context.Context, podIP string, g *corev1.GRPCAction) probeResult {
	addr := net.JoinHostPort(podIP, strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return probeResult{output: err.Error()}
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return probeResult{output: fmt.Sprintf("failed to connect service %q within %s: %v", addr, time.Until(deadlineOf(ctx)), err)}
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return probeResult{output: fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus())}
	}
	return probeResult{ok: true}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// probeLoop runs p every period and calls onChange when the result flips
// by the probe's thresholds (the first result counts as a flip). It returns
// when ctx ends or onChange returns false. When recheck is shorter than the
// period and the first probe fails, the second runs recheck later.
func probeLoop(ctx context.Context, p *corev1.Probe, recheck time.Duration, run func(context.Context) probeResult, onFail func(probeResult), onChange func(bool) bool) {
	period := secondsOr(p.PeriodSeconds, 10)
	timeout := secondsOr(p.TimeoutSeconds, 1)
	successT := max(int(p.SuccessThreshold), 1)
	failureT := max(int(p.FailureThreshold), 1)
	if p.InitialDelaySeconds > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
		}
	}
	var successes, failures int
	known, state := false, false
	for {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		res := run(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if res.ok {
			successes, failures = successes+1, 0
			if (!known || !state) && successes >= successT {
				known, state = true, true
				if !onChange(true) {
					return
				}
			}
		} else {
			failures, successes = failures+1, 0
			onFail(res)
			if (!known || state) && failures >= failureT {
				known, state = true, false
				if !onChange(false) {
					return
				}
			}
		}
		wait := period
		if successes+failures == 1 && !res.ok && recheck > 0 && recheck < period {
			wait = recheck
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// readinessRecheck is when a container's readiness is probed again after its first probe,
// run as the container starts, failed (which it does for nearly every server: it has not
// listened yet). The kubelet probes a new container again as soon as its next status sync
// (a PLEG relist, every second) sees it running, so its first probes land anywhere in the
// first second; probing only once per period after that first miss made every knet pod
// with a readiness probe wait a full period to become Ready.
const readinessRecheck = 250 * time.Millisecond

func secondsOr(s int32, def int) time.Duration {
	if s <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(s) * time.Second
}

// probe runs the startup, then the liveness and readiness probes of one
// attempt until ctx (the attempt) ends.
func (c *containerRunner) probe(ctx context.Context, proc containerProcess, podIPs []string) {
	w := c.w
	w.mu.Lock()
	t := probeTarget{proc: proc, env: c.env, container: &c.spec}
	w.mu.Unlock()
	if len(podIPs) > 0 {
		t.podIP = podIPs[0]
	}
	runner := func(p *corev1.Probe) func(context.Context) probeResult {
		return func(ctx context.Context) probeResult {
			return runHandler(ctx, t, p.ProbeHandler, secondsOr(p.TimeoutSeconds, 1))
		}
	}
	unhealthy := func(kind string) func(probeResult) {
		return func(r probeResult) {
			c.event(corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", kind, trimOutput(r.output))
		}
	}
	if sp := c.spec.StartupProbe; sp != nil {
		started := false
		probeLoop(ctx, sp, 0, runner(sp), unhealthy("Startup"), func(ok bool) bool {
			if ok {
				started = true
				return false
			}
			if ctx.Err() == nil {
				c.requestKill("failed startup probe")
			}
			return false
		})
		if !started {
			return
		}
		w.mu.Lock()
		c.rec.Started = true
		c.rec.StartedOnce = true
		c.rec.Ready = c.spec.ReadinessProbe == nil && (!c.isInit || c.sidecar)
		w.mu.Unlock()
		c.startedOnce.Do(func() { close(c.started) })
		w.changed()
	}
	if lp := c.spec.LivenessProbe; lp != nil {
		go probeLoop(ctx, lp, 0, runner(lp), unhealthy("Liveness"), func(ok bool) bool {
			if !ok {
				if ctx.Err() == nil {
					c.requestKill("failed liveness probe")
				}
				return false
			}
			return true
		})
	}
	if rp := c.spec.ReadinessProbe; rp != nil {
		probeLoop(ctx, rp, readinessRecheck, runner(rp), unhealthy("Readiness"), func(ok bool) bool {
			w.mu.Lock()
			c.rec.Ready = ok
			w.mu.Unlock()
			w.changed()
			return true
		})
	}
}

func (c *containerRunner) requestKill(why string) {
	select {
	case c.kill <- why:
	default:
	}
}

// runHook runs a postStart or preStop hook.
func (c *containerRunner) runHook(ctx context.Context, h *corev1.LifecycleHandler, proc containerProcess, podIPs []string) error {
	if h.Sleep != nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
		return nil
	}
	c.w.mu.Lock()
	t := probeTarget{proc: proc, env: c.env, container: &c.spec}
	c.w.mu.Unlock()
	if len(podIPs) > 0 {
		t.podIP = podIPs[0]
	}
	timeout := time.Until(deadlineOf(ctx))
	if _, ok := ctx.Deadline(); !ok {
		timeout = 2 * time.Minute
	}
	res := runHandler(ctx, t, corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket}, timeout)
	if !res.ok {
		return fmt.Errorf("%s", trimOutput(res.output))
	}
	return nil
}
