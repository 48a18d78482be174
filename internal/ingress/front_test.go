package ingress

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// rawBackend answers by path: /chunked streams a chunked body, /eof a body
// delimited by closing the connection, /connhdr a header its Connection
// header marks hop-by-hop, /slow after 300ms; anything else echoes the
// request line and the headers the proxy sent.
func rawBackend(t *testing.T) (port int32, slowHits *atomic.Int32) {
	t.Helper()
	slowHits = new(atomic.Int32)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/eof", "/connhdr":
			c, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if r.URL.Path == "/eof" {
				bw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
			} else {
				bw.WriteString("HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok")
			}
			bw.Flush()
		case "/slow":
			slowHits.Add(1)
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "slow done")
		default:
			fmt.Fprintf(w, "%s %s %s body=%s hdr=", r.Method, r.RequestURI, r.Proto, body)
			for _, k := range []string{"X-Forwarded-For", "X-Custom", "Keep-Alive", "X-Hop"} {
				fmt.Fprintf(w, "%s:%s;", k, strings.Join(r.Header.Values(k), ","))
			}
		}
	}))
	t.Cleanup(s.Close)
	return int32(s.Listener.Addr().(*net.TCPAddr).Port), slowHits
}

func frontEnv(t *testing.T) *env {
	port, _ := rawBackend(t)
	ing := newIngress("web", "site", 0, httpRule("raw.example", ingPath("/", networkingv1.PathTypePrefix, "raw", 80)))
	e := startEnv(t, append(serviceFor("web", "raw", port), ing, knetClass(true))...)
	waitFor(t, "route", func() bool { code, _ := e.get(t, "raw.example", "/"); return code == 200 })
	return e
}

// exchangeRaw writes raw on one connection and reads n responses.
func exchangeRaw(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d of %q: %v", i+1, raw, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", i+1, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
	return out
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func TestFrontPipelinedAndHandedOffRequestsOnOneConnection(t *testing.T) {
	e := frontEnv(t)
	// Pipelined requests: lean, lean with a body, a 404 the lean path
	// answers, one it hands to net/http (an escaped path) and one after it:
	// all answered, in order.
	raw := "GET /one HTTP/1.1\r\nHost: raw.example\r\nX-Custom: a\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: raw.example\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /nowhere HTTP/1.1\r\nHost: other.example\r\n\r\n" +
		"GET /%74hree HTTP/1.1\r\nHost: raw.example\r\n\r\n" +
		"GET /four HTTP/1.1\r\nHost: raw.example\r\n\r\n"
	resps := exchangeRaw(t, e.httpAddr, raw, 5)
	for i, want := range []struct {
		code int
		body string
	}{{200, "GET /one HTTP/1.1 body= hdr=X-Forwarded-For:127.0.0.1;X-Custom:a;"}, {200, "POST /two HTTP/1.1 body=abc"},
		{404, "404 Not Found"}, {200, "GET /%74hree HTTP/1.1"}, {200, "GET /four HTTP/1.1"}} {
		if got := body(resps[i]); resps[i].StatusCode != want.code || !strings.HasPrefix(got, want.body) {
			t.Errorf("response %d: %d %q, want %d %q...", i+1, resps[i].StatusCode, got, want.code, want.body)
		}
	}
}

func TestFrontHeadersAndFraming(t *testing.T) {
	e := frontEnv(t)
	for _, tc := range []struct {
		name, raw string
		code      int
		body      string
		header    map[string]string // "" means absent
		closes    bool
	}{
		{name: "hop-by-hop and spoofed X-Forwarded-For dropped",
			raw:  "GET /h HTTP/1.1\r\nHost: raw.example\r\nX-Forwarded-For: 6.6.6.6\r\nKeep-Alive: 5\r\nConnection: keep-alive\r\n\r\n",
			code: 200, body: "GET /h HTTP/1.1 body= hdr=X-Forwarded-For:127.0.0.1;X-Custom:;Keep-Alive:;X-Hop:;"},
		{name: "Connection token names a header: net/http path drops it",
			raw:  "GET /h HTTP/1.1\r\nHost: raw.example\r\nX-Hop: 1\r\nConnection: X-Hop\r\n\r\n",
			code: 200, body: "GET /h HTTP/1.1 body= hdr=X-Forwarded-For:127.0.0.1;X-Custom:;Keep-Alive:;X-Hop:;"},
		{name: "chunked backend response",
			raw:  "GET /chunked HTTP/1.1\r\nHost: raw.example\r\n\r\n",
			code: 200, body: "part0;part1;part2;"},
		{name: "close-delimited backend response",
			raw:  "GET /eof HTTP/1.1\r\nHost: raw.example\r\n\r\n",
			code: 200, body: "until-eof", header: map[string]string{"Connection": ""}},
		{name: "Connection-listed response header dropped",
			raw:  "GET /connhdr HTTP/1.1\r\nHost: raw.example\r\n\r\n",
			code: 200, body: "ok", header: map[string]string{"X-Secret": "", "X-Kept": "2", "Connection": ""}},
		{name: "HEAD has no body",
			raw:  "HEAD /h HTTP/1.1\r\nHost: raw.example\r\n\r\n",
			code: 200, body: ""},
		{name: "client asks to close",
			raw:  "GET /h HTTP/1.1\r\nHost: raw.example\r\nConnection: close\r\n\r\n",
			code: 200, body: "GET /h", closes: true},
		{name: "HTTP/1.0 (net/http path)",
			raw:  "GET /h HTTP/1.0\r\nHost: raw.example\r\n\r\n",
			code: 200, body: "GET /h HTTP/1.1", closes: true},
		{name: "header over the lean buffer, under MaxHeaderBytes",
			raw:  "GET /h HTTP/1.1\r\nHost: raw.example\r\nX-Custom: " + strings.Repeat("y", 12<<10) + "\r\n\r\n",
			code: 200, body: "GET /h HTTP/1.1 body= hdr=X-Forwarded-For:127.0.0.1;X-Custom:yyy"},
		{name: "missing Host",
			raw:  "GET /h HTTP/1.1\r\n\r\n",
			code: 400, closes: true},
		{name: "no route",
			raw:  "GET /h HTTP/1.1\r\nHost: other.example\r\n\r\n",
			code: 404, body: "404 Not Found: no Ingress rule matches this host and path"},
		{name: "no route, with a body the proxy does not read",
			raw:  "POST /h HTTP/1.1\r\nHost: other.example\r\nContent-Length: 5\r\n\r\nhello",
			code: 404, closes: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.httpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tc.raw)
			br := bufio.NewReader(c)
			req, _ := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.raw)))
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != tc.code || !strings.HasPrefix(string(got), tc.body) {
				t.Errorf("%d %q, want %d %q...", resp.StatusCode, got, tc.code, tc.body)
			}
			if resp.StatusCode == 200 && resp.Header.Get("Date") == "" {
				t.Errorf("no Date header")
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if resp.Close != tc.closes {
				t.Errorf("response says Connection: close = %v, want %v", resp.Close, tc.closes)
			}
			if tc.closes {
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("connection left open after the response (read: %v)", err)
				}
			}
		})
	}
}

func TestFrontShutdownFinishesRequestInFlight(t *testing.T) {
	port, _ := rawBackend(t)
	ing := newIngress("web", "site", 0, httpRule("raw.example", ingPath("/", networkingv1.PathTypePrefix, "raw", 80)))
	cfg := testConfig(fake.NewClientset(append(serviceFor("web", "raw", port), ing, knetClass(true))...))
	cfg.MinSyncInterval = 10 * time.Millisecond
	cfg.Recorder = record.NewFakeRecorder(100)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	h, _, _ := c.Addrs()
	waitFor(t, "route", func() bool {
		r := exchangeRaw(t, h.String(), "GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n", 1)
		return r[0].StatusCode == 200
	})
	// An idle keep-alive connection is closed by the shutdown; a request in
	// flight gets its whole response.
	idle, err := net.Dial("tcp", h.String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	result := make(chan string, 1)
	go func() {
		r := exchangeRaw(t, h.String(), "GET /slow HTTP/1.1\r\nHost: raw.example\r\n\r\n", 1)
		result <- fmt.Sprintf("%d %s close=%v", r[0].StatusCode, body(r[0]), r[0].Close)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if got, want := <-result, "200 slow done close=true"; got != want {
		t.Errorf("request in flight during shutdown: %q, want %q", got, want)
	}
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection after shutdown: read %v, want EOF", err)
	}
}

func TestFrontBackendTimeoutIs504AndConnectionGoesOn(t *testing.T) {
	port, slowHits := rawBackend(t)
	ing := newIngress("web", "site", 0, httpRule("raw.example", ingPath("/", networkingv1.PathTypePrefix, "raw", 80)))
	cfg := testConfig(fake.NewClientset(append(serviceFor("web", "raw", port), ing, knetClass(true))...))
	cfg.MinSyncInterval = 10 * time.Millisecond
	cfg.Recorder = record.NewFakeRecorder(100)
	cfg.BackendTimeout = 150 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h, _, _ := c.Addrs()
	waitFor(t, "route", func() bool {
		return exchangeRaw(t, h.String(), "GET / HTTP/1.1\r\nHost: raw.example\r\n\r\n", 1)[0].StatusCode == 200
	})
	// Quick requests spaced by less than the timeout must not inherit an
	// old deadline; /slow (300ms) must time out; the connection then serves
	// the next request.
	var raw strings.Builder
	for range 4 {
		raw.WriteString("GET /q HTTP/1.1\r\nHost: raw.example\r\n\r\n")
	}
	raw.WriteString("GET /slow HTTP/1.1\r\nHost: raw.example\r\n\r\nGET /after HTTP/1.1\r\nHost: raw.example\r\n\r\n")
	conn, err := net.Dial("tcp", h.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	var got []int
	for i, line := range strings.SplitAfter(raw.String(), "\r\n\r\n")[:6] {
		if i < 4 {
			time.Sleep(60 * time.Millisecond)
		}
		io.WriteString(conn, line)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		got = append(got, resp.StatusCode)
	}
	if want := []int{200, 200, 200, 200, 504, 200}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	// A backend that is slow, not gone: the request is not sent again.
	if n := slowHits.Load(); n != 1 {
		t.Errorf("the timed-out request reached the backend %d times, want 1", n)
	}
}
