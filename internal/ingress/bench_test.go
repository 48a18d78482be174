package ingress

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// tinyBackend answers every request with a 13-byte body, the way the wrk
// comparison against HAProxy does.
func tinyBackend(tb testing.TB) (*httptest.Server, int32) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Hello, world\n")
	}))
	tb.Cleanup(s.Close)
	return s, int32(s.Listener.Addr().(*net.TCPAddr).Port)
}

func benchEnv(t testing.TB) *env {
	_, port := tinyBackend(t)
	ing := newIngress("web", "bench", 0, httpRule("bench.example", ingPath("/", networkingv1.PathTypePrefix, "tiny", 80)))
	e := startEnv(t, append(serviceFor("web", "tiny", port), ing, knetClass(true))...)
	waitFor(t, "route", func() bool { code, _ := e.get(t, "bench.example", "/"); return code == 200 })
	return e
}

func benchGets(b *testing.B, client *http.Client, url string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxyHTTP1 is keep-alive GETs through knet's HTTP/1.1 path (the
// client and the backend share the machine, so this bounds end to end
// throughput, not the proxy alone).
func BenchmarkProxyHTTP1(b *testing.B) {
	e := benchEnv(b)
	b.ResetTimer()
	benchGets(b, e.http, "http://bench.example/")
}

// BenchmarkReverseProxyBaseline is the same through a stock
// httputil.ReverseProxy, for comparison.
func BenchmarkReverseProxyBaseline(b *testing.B) {
	be, _ := tinyBackend(b)
	u, _ := url.Parse(be.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
	front := httptest.NewServer(rp)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ResetTimer()
	benchGets(b, client, front.URL+"/")
}

// TestWrk runs wrk against the proxy and a tiny backend on 127.0.0.1 and
// prints its report. It is a measurement, not a check: it runs only with
// KNET_INGRESS_WRK=1 (e.g. KNET_INGRESS_WRK=1 go test -run TestWrk -v).
func TestWrk(t *testing.T) {
	if os.Getenv("KNET_INGRESS_WRK") != "1" {
		t.Skip("set KNET_INGRESS_WRK=1 to measure with wrk")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed")
	}
	e := benchEnv(t)
	direct, _ := tinyBackend(t)
	u, _ := url.Parse(direct.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
	baseline := httptest.NewServer(rp)
	defer baseline.Close()
	dur := os.Getenv("KNET_INGRESS_WRK_DURATION")
	if dur == "" {
		dur = "10s"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, target := range []struct{ name, addr string }{
		{"backend alone", direct.Listener.Addr().String()},
		{"knet ingress", e.httpAddr},
		{"httputil.ReverseProxy", baseline.Listener.Addr().String()},
	} {
		cmd := exec.CommandContext(ctx, wrk, "-t2", "-c64", "-d"+dur, "--latency", "-H", "Host: bench.example", "http://"+target.addr+"/")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		t.Logf("%s:\n%s", target.name, out)
	}
}
