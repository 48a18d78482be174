package ingress

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	networkingv1 "k8s.io/api/networking/v1"
)

// swallowConnects listens on ip:port with a full accept queue: the kernel drops further SYNs, so
// a connect hangs as it does towards a pod that just disappeared behind a stale neighbour entry.
func swallowConnects(t *testing.T, ip string, port int32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	addr := &unix.SockaddrInet4{Port: int(port)}
	copy(addr.Addr[:], net.ParseIP(ip).To4())
	if err := unix.Bind(fd, addr); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the accept queue; these connections are never accepted.
	for range 2 {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, fmt.Sprint(port)), 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, fmt.Sprint(port)), 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel still completes connects to a listener with a full accept queue")
	}
}

// TestProxyFailsOverFromEndpointThatSwallowsConnects: with one endpoint whose connects hang, a
// client that waits 3 s (less than the 5 s connect timeout) still gets every answer.
func TestProxyFailsOverFromEndpointThatSwallowsConnects(t *testing.T) {
	_, pa := echoBackend(t, "A")
	swallowConnects(t, "127.0.0.3", pa)
	P := networkingv1.PathTypePrefix
	ing := newIngress("web", "site", 0, httpRule("", ingPath("/", P, "a", 80)))
	e := startEnv(t, append(serviceFor("web", "a", pa, "127.0.0.3"), ing, knetClass(true))...)
	e.http.Timeout = 3 * time.Second
	waitFor(t, "routes", func() bool {
		resp, err := e.http.Get("http://x/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	for i := range 6 {
		if code, body := e.get(t, "x", fmt.Sprintf("/%d", i)); code != 200 {
			t.Fatalf("request %d: %d %q, want 200 from the live endpoint", i, code, body)
		}
	}
}
