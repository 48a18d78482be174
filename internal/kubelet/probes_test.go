package kubelet

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestHTTPProbe(t *testing.T) {
	var gotHost, gotHeader, gotPath atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost.Store(r.Host)
		gotHeader.Store(r.Header.Get("X-Probe"))
		gotPath.Store(r.URL.RequestURI())
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(http.StatusOK)
		case "/redirect":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	c := &corev1.Container{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	target := probeTarget{podIP: "127.0.0.1", container: c}

	get := func(path string, p intstr.IntOrString, headers ...corev1.HTTPHeader) probeResult {
		return runHandler(context.Background(), target, corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: p, HTTPHeaders: headers,
		}}, 2*time.Second)
	}
	if r := get("/healthz?x=1", intstr.FromString("http"), corev1.HTTPHeader{Name: "Host", Value: "example.test"}, corev1.HTTPHeader{Name: "X-Probe", Value: "yes"}); !r.ok {
		t.Errorf("healthy endpoint failed: %s", r.output)
	}
	if gotHost.Load() != "example.test" || gotHeader.Load() != "yes" || gotPath.Load() != "/healthz?x=1" {
		t.Errorf("request: host %v header %v path %v", gotHost.Load(), gotHeader.Load(), gotPath.Load())
	}
	if r := get("/redirect", intstr.FromInt32(int32(port))); !r.ok {
		t.Errorf("redirect to a healthy endpoint failed: %s", r.output)
	}
	if r := get("/broken", intstr.FromInt32(int32(port))); r.ok {
		t.Error("503 counted as success")
	}
	if r := get("/healthz", intstr.FromString("nope")); r.ok {
		t.Error("unknown named port counted as success")
	}
}

func TestHTTPSProbeSkipsVerification(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	r := runHandler(context.Background(), probeTarget{podIP: "127.0.0.1"}, corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/", Port: intstr.FromInt32(int32(port)), Scheme: corev1.URISchemeHTTPS,
	}}, 2*time.Second)
	if !r.ok {
		t.Errorf("HTTPS probe against a self-signed server failed: %s", r.output)
	}
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	tcp := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(port))}}
	if r := runHandler(context.Background(), probeTarget{podIP: "127.0.0.1"}, tcp, time.Second); !r.ok {
		t.Errorf("open port: %s", r.output)
	}
	l.Close()
	if r := runHandler(context.Background(), probeTarget{podIP: "127.0.0.1"}, tcp, time.Second); r.ok {
		t.Error("closed port counted as success")
	}
}

func TestProbeLoopThresholds(t *testing.T) {
	// Results: fail, fail, ok, ok, fail, fail, fail ... with failureThreshold 2
	// and successThreshold 2 the state goes false (after 2 failures), then
	// true (after 2 successes), then false.
	results := []bool{false, false, true, true, false, false}
	var i int
	var changes []bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &corev1.Probe{PeriodSeconds: 1, SuccessThreshold: 2, FailureThreshold: 2}
	done := make(chan struct{})
	go func() {
		defer close(done)
		probeLoop(ctx, p, 0, func(context.Context) probeResult {
			r := results[i]
			i++
			return probeResult{ok: r}
		}, func(probeResult) {}, func(ok bool) bool {
			changes = append(changes, ok)
			return len(changes) < 3
		})
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("probe loop did not report three changes")
	}
	if len(changes) != 3 || changes[0] || !changes[1] || changes[2] {
		t.Errorf("changes = %v, want [false true false]", changes)
	}
}

// TestProbeLoopRechecksOnlyAfterAFirstFailure: a first failed probe is retried after recheck,
// every later one after the period; a first success waits the period.
func TestProbeLoopRechecksOnlyAfterAFirstFailure(t *testing.T) {
	p := &corev1.Probe{PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
	gaps := func(results []bool) []time.Duration {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var at []time.Time
		probeLoop(ctx, p, 100*time.Millisecond, func(context.Context) probeResult {
			at = append(at, time.Now())
			return probeResult{ok: results[len(at)-1]}
		}, func(probeResult) {}, func(bool) bool { return len(at) < len(results) })
		var out []time.Duration
		for i := 1; i < len(at); i++ {
			out = append(out, at[i].Sub(at[i-1]))
		}
		return out
	}
	g := gaps([]bool{false, false, true})
	if len(g) != 2 || g[0] < 100*time.Millisecond || g[0] > 600*time.Millisecond || g[1] < time.Second {
		t.Errorf("fail, fail, ok: gaps %v, want ~100ms then ~1s", g)
	}
	g = gaps([]bool{true, false})
	if len(g) != 1 || g[0] < time.Second {
		t.Errorf("ok, fail: gaps %v, want ~1s", g)
	}
}
