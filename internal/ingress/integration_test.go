package ingress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

// env is a running controller on 127.0.0.1 with a fake API.
type env struct {
	client             *fake.Clientset
	httpAddr, httpsAdr string
	// http is a keep-alive client whose connections all go to the HTTP
	// listener, whatever the URL's host.
	http *http.Client
}

func startEnv(t testing.TB, objs ...runtime.Object) *env {
	t.Helper()
	client := fake.NewClientset(objs...)
	cfg := testConfig(client)
	cfg.MinSyncInterval = 10 * time.Millisecond
	cfg.Recorder = record.NewFakeRecorder(100)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	h, s, _ := c.Addrs()
	e := &env{client: client, httpAddr: h.String(), httpsAdr: s.String()}
	e.http = &http.Client{
		Transport:     &http.Transport{DialContext: e.dialTo(e.httpAddr), MaxIdleConnsPerHost: 64},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	t.Cleanup(e.http.CloseIdleConnections)
	return e
}

func (e *env) dialTo(addr string) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// get returns status and body of GET http://host+path through the proxy.
func (e *env) get(t testing.TB, host, path string) (int, string) {
	t.Helper()
	resp, err := e.http.Get("http://" + host + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls until f is true or fails the test after 5s.
func waitFor(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoBackend answers "name method path" plus the X-Forwarded-* headers.
func echoBackend(t testing.TB, name string) (*httptest.Server, int32) {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s %s %s host=%s xff=%s proto=%s xhost=%s port=%s body=%s",
			name, r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Port"), body)
	}))
	t.Cleanup(s.Close)
	return s, int32(s.Listener.Addr().(*net.TCPAddr).Port)
}

// serviceFor is a Service "name" port 80 and its EndpointSlice pointing at
// 127.0.0.1:port (and any extra addresses on the same port).
func serviceFor(ns, name string, port int32, extra ...string) []runtime.Object {
	return []runtime.Object{newService(ns, name, 80), newSlice(ns, name, "http", port, append([]string{"127.0.0.1"}, extra...)...)}
}

func TestProxyRoutesByHostAndPath(t *testing.T) {
	_, pa := echoBackend(t, "A")
	_, pb := echoBackend(t, "B")
	P, E := networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	ing := newIngress("web", "site", 0,
		httpRule("shop.example", ingPath("/", P, "a", 80), ingPath("/api", P, "b", 80), ingPath("/api/exact", E, "a", 80)),
		httpRule("*.wild.example", ingPath("/", P, "b", 80)),
		httpRule("dead.example", ingPath("/", P, "empty", 80)))
	objs := append(serviceFor("web", "a", pa), serviceFor("web", "b", pb)...)
	objs = append(objs, ing, newService("web", "empty", 80), knetClass(true))
	e := startEnv(t, objs...)
	waitFor(t, "routes", func() bool { code, _ := e.get(t, "shop.example", "/"); return code == 200 })

	for _, tc := range []struct{ host, path, wantPrefix string }{
		{"shop.example", "/", "A GET /"},
		{"shop.example", "/cart?x=1", "A GET /cart?x=1"},
		{"shop.example", "/api", "B GET /api"},
		{"shop.example", "/api/v1/items", "B GET /api/v1/items"},
		{"shop.example", "/apix", "A GET /apix"},
		{"shop.example", "/api/exact", "A GET /api/exact"},
		{"shop.example", "/api/exact/more", "B GET /api/exact/more"},
		{"SHOP.example:8080", "/api", "B GET /api"},
		{"x.wild.example", "/y", "B GET /y"},
	} {
		code, body := e.get(t, tc.host, tc.path)
		if code != 200 || !strings.HasPrefix(body, tc.wantPrefix) {
			t.Errorf("%s%s: %d %q, want 200 %q...", tc.host, tc.path, code, body, tc.wantPrefix)
		}
	}
	if code, _ := e.get(t, "a.b.wild.example", "/"); code != 404 {
		t.Errorf("two labels under the wildcard: %d, want 404", code)
	}
	if code, _ := e.get(t, "unknown.example", "/"); code != 404 {
		t.Errorf("unknown host: %d, want 404", code)
	}
	if code, _ := e.get(t, "dead.example", "/"); code != 503 {
		t.Errorf("Service without endpoints: %d, want 503", code)
	}
	_, body := e.get(t, "shop.example", "/hdr")
	port := e.httpAddr[strings.LastIndexByte(e.httpAddr, ':')+1:]
	if want := "host=shop.example xff=127.0.0.1 proto=http xhost=shop.example port=" + port; !strings.Contains(body, want) {
		t.Errorf("forwarded headers: %q, want %q", body, want)
	}

	// A POST body (fixed length and chunked) reaches the backend.
	resp, err := e.http.Post("http://shop.example/api/post", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasSuffix(string(b), "body=hello") {
		t.Errorf("POST body: %q", b)
	}
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("chunk1-")); pw.Write([]byte("chunk2")); pw.Close() }()
	resp, err = e.http.Post("http://shop.example/api/post", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasSuffix(string(b), "body=chunk1-chunk2") {
		t.Errorf("chunked POST body: %q", b)
	}

	// A malformed request and an oversized header get 400 and 431.
	for name, raw := range map[string]string{
		"400": "GET / HTTP/1.1\r\nHost: shop.example\r\nBad Header Line\r\n\r\n",
		"431": "GET / HTTP/1.1\r\nHost: shop.example\r\nX-Big: " + strings.Repeat("x", 64<<10) + "\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", e.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, raw)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(line, "HTTP/1.1 "+name) {
			t.Errorf("want %s, got status line %q", name, line)
		}
	}

	// The route moves: the next request follows, without reload.
	up := ing.DeepCopy()
	up.Spec.Rules[0].HTTP.Paths[0].Backend = svcBackend("b", 80)
	if _, err := e.client.NetworkingV1().Ingresses("web").Update(context.Background(), up, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "route to B", func() bool { _, body := e.get(t, "shop.example", "/"); return strings.HasPrefix(body, "B ") })
}

func TestProxyTLSHTTP2AndRedirect(t *testing.T) {
	_, pa := echoBackend(t, "A")
	sec, roots := tlsSecret(t, "web", "www-tls", "www.example.com")
	P := networkingv1.PathTypePrefix
	ing := newIngress("web", "site", 0, httpRule("www.example.com", ingPath("/", P, "a", 80)))
	ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"www.example.com"}, SecretName: "www-tls"}}
	e := startEnv(t, append(serviceFor("web", "a", pa), ing, sec, knetClass(true))...)

	var resp *http.Response
	waitFor(t, "redirect", func() bool {
		r, err := e.http.Get("http://www.example.com/path?q=1")
		if err == nil {
			r.Body.Close()
			resp = r
		}
		return err == nil && r.StatusCode == http.StatusPermanentRedirect
	})
	httpsPort := e.httpsAdr[strings.LastIndexByte(e.httpsAdr, ':')+1:]
	if got, want := resp.Header.Get("Location"), "https://www.example.com:"+httpsPort+"/path?q=1"; got != want {
		t.Errorf("redirect Location %q, want %q", got, want)
	}

	client := func(roots *x509.CertPool, h2 bool) *http.Client {
		tr := &http.Transport{DialContext: e.dialTo(e.httpsAdr), TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	for _, h2 := range []bool{true, false} {
		var r *http.Response
		var err error
		waitFor(t, "certificate from the Secret", func() bool {
			r, err = client(roots, h2).Get("https://www.example.com/secure")
			return err == nil
		})
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		wantProto := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]
		if r.StatusCode != 200 || r.Proto != wantProto || !strings.Contains(string(body), "A GET /secure") ||
			!strings.Contains(string(body), "proto=https") || !strings.Contains(string(body), "port="+httpsPort) {
			t.Errorf("HTTPS (h2=%v): %d %s %q", h2, r.StatusCode, r.Proto, body)
		}
	}
	// An unknown name gets the default certificate, which a verifying client rejects.
	if _, err := client(roots, true).Get("https://other.example.com/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("unknown SNI: err %v, want a certificate verification error", err)
	}
}

func TestProxyWebsocketAndH2CBackend(t *testing.T) {
	up := websocket.Upgrader{}
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("echo: "), msg...))
		}
	}))
	t.Cleanup(ws.Close)
	grpcish := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		fmt.Fprintf(w, "proto=%d", r.ProtoMajor)
		w.Header().Set("Grpc-Status", "0")
	}))
	grpcish.Config.Protocols = new(http.Protocols)
	grpcish.Config.Protocols.SetUnencryptedHTTP2(true)
	grpcish.Start()
	t.Cleanup(grpcish.Close)
	P := networkingv1.PathTypePrefix
	ing := newIngress("web", "site", 0, httpRule("", ingPath("/ws", P, "ws", 80), ingPath("/grpc", P, "grpc", 80)))
	grpcObjs := serviceFor("web", "grpc", int32(grpcish.Listener.Addr().(*net.TCPAddr).Port))
	ap := "grpc"
	grpcObjs[0].(*corev1.Service).Spec.Ports[0].AppProtocol = &ap
	objs := append(serviceFor("web", "ws", int32(ws.Listener.Addr().(*net.TCPAddr).Port)), grpcObjs...)
	e := startEnv(t, append(objs, ing, knetClass(true))...)
	waitFor(t, "routes", func() bool { code, _ := e.get(t, "x", "/grpc"); return code == 200 })

	d := websocket.Dialer{NetDialContext: e.dialTo(e.httpAddr), HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("ws://chat.example/ws", nil)
	if err != nil {
		t.Fatalf("websocket dial through the proxy: %v", err)
	}
	defer conn.Close()
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.ReadMessage()
		if err != nil || string(got) != "echo: "+msg {
			t.Fatalf("websocket echo: %q, %v", got, err)
		}
	}

	// The h2c backend is reached over HTTP/2 and its trailers arrive.
	tr := &http.Transport{DialContext: e.dialTo(e.httpsAdr), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	r, err := (&http.Client{Transport: tr}).Post("https://grpc.example/grpc/Svc/Method", "application/grpc", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if string(body) != "proto=2" || r.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("h2c backend: body %q trailer %v, want proto=2 and Grpc-Status 0", body, r.Trailer)
	}
}

func TestProxyRetriesDeadEndpoint(t *testing.T) {
	_, pa := echoBackend(t, "A")
	P := networkingv1.PathTypePrefix
	ing := newIngress("web", "site", 0, httpRule("", ingPath("/", P, "a", 80)))
	// 127.0.0.2 is loopback too, but nothing listens there: connection refused.
	e := startEnv(t, append(serviceFor("web", "a", pa, "127.0.0.2"), ing, knetClass(true))...)
	waitFor(t, "routes", func() bool { code, _ := e.get(t, "x", "/"); return code == 200 })
	for i := range 20 {
		if code, body := e.get(t, "x", fmt.Sprintf("/%d", i)); code != 200 {
			t.Fatalf("request %d: %d %q, want 200 after a retry on the live endpoint", i, code, body)
		}
	}
}

// TestRouteChangeUnderLoad swaps the backend of a route and its endpoints
// while clients keep sending requests: none may fail.
func TestRouteChangeUnderLoad(t *testing.T) {
	_, pa := echoBackend(t, "A")
	_, pb := echoBackend(t, "B")
	P := networkingv1.PathTypePrefix
	ing := newIngress("web", "site", 0, httpRule("load.example", ingPath("/", P, "a", 80)))
	objs := append(serviceFor("web", "a", pa), serviceFor("web", "b", pb)...)
	e := startEnv(t, append(objs, ing, knetClass(true))...)
	waitFor(t, "routes", func() bool { code, _ := e.get(t, "load.example", "/"); return code == 200 })

	var ok, failed, fromB atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := e.http.Get("http://load.example/x")
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				if strings.HasPrefix(string(b), "B ") {
					fromB.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	ctx := context.Background()
	for i := range 5 {
		// Flip the route, and churn the endpoints of the Service it leaves.
		target, other, port := "b", "a", pa
		if i%2 == 1 {
			target, other, port = "a", "b", pb
		}
		up, _ := e.client.NetworkingV1().Ingresses("web").Get(ctx, "site", metav1.GetOptions{})
		up.Spec.Rules[0].HTTP.Paths[0].Backend = svcBackend(target, 80)
		if _, err := e.client.NetworkingV1().Ingresses("web").Update(ctx, up, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		es := newSlice("web", other, "http", port, "127.0.0.1")
		es.Labels["churn"] = strconv.Itoa(i)
		if _, err := e.client.DiscoveryV1().EndpointSlices("web").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests, %d served by B, %d failed", ok.Load(), fromB.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed during route changes, want 0", failed.Load())
	}
	if fromB.Load() == 0 || fromB.Load() == ok.Load() {
		t.Errorf("route changes not visible: %d of %d from B", fromB.Load(), ok.Load())
	}
}
