package controlplane

import (
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestMultiListenerServesEveryAddress(t *testing.T) {
	ports := freePorts(t, 1)
	addrs := []string{
		net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		net.JoinHostPort("127.0.0.2", strconv.Itoa(ports[0])),
	}
	m, err := listenAll(addrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if got := m.Addr().String(); got != addrs[0] {
		t.Errorf("Addr() = %s, want the loopback address %s", got, addrs[0])
	}

	go func() {
		for {
			c, err := m.Accept()
			if err != nil {
				return
			}
			// Echo the local address so the client learns which listener took it.
			io.WriteString(c, c.LocalAddr().String())
			c.Close()
		}
	}()
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", a, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != a {
			t.Errorf("connection to %s was served as %q", a, got)
		}
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Close", a)
		}
	}
}

func TestListenAllIsAllOrNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	if _, err := listenAll([]string{"127.0.0.1:" + port, "127.0.0.2:" + port}); err == nil {
		t.Fatal("listenAll succeeded although one address was taken")
	}
	// The first address must have been released again.
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("127.0.0.1:%s still held after a failed listenAll: %v", port, err)
	}
	l.Close()
}
