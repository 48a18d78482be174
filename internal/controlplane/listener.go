package controlplane

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// multiListener serves one server on several addresses. kube-apiserver takes
// a single net.Listener; rather than binding 0.0.0.0 (which would expose the
// API on the host's uplink) or forwarding bytes from one address to the other
// (an extra hop that hides the client's address from audit and the Node
// authorizer's logs), we bind exactly 127.0.0.1 and AdvertiseAddress and hand
// the API server their union.
type multiListener struct {
	listeners []net.Listener
	conns     chan net.Conn
	errs      chan error
	closed    chan struct{}
	closeOnce sync.Once
}

// listenAll binds every address or none.
func listenAll(addrs []string) (*multiListener, error) {
	m := &multiListener{conns: make(chan net.Conn), errs: make(chan error, len(addrs)), closed: make(chan struct{})}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, o := range m.listeners {
				o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w (is another cluster using this port?)", a, err)
		}
		m.listeners = append(m.listeners, l)
	}
	for _, l := range m.listeners {
		go m.acceptLoop(l)
	}
	return m, nil
}

func (m *multiListener) acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case m.errs <- err:
			case <-m.closed:
			}
			return
		}
		select {
		case m.conns <- c:
		case <-m.closed:
			c.Close()
			return
		}
	}
}

// Accept returns the next connection from any address. A failing address
// ends serving on all of them, as it would for a single listener.
func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		return nil, err
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	var errs []error
	m.closeOnce.Do(func() {
		close(m.closed)
		for _, l := range m.listeners {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

// Addr is the first address (the loopback one): kube-apiserver derives its
// in-process loopback client from it.
func (m *multiListener) Addr() net.Addr { return m.listeners[0].Addr() }
