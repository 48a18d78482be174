package ingress

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// backend is a Service port: its ready endpoints, picked round-robin.
type backend struct {
	name      string // namespace/service:port, for logs
	endpoints []*endpointPool
	next      atomic.Uint32
	// unavailable says why the backend answers 503 without endpoints
	// (missing Service, port...); empty when it resolved.
	unavailable string
	// h2 backends (Service port appProtocol kubernetes.io/h2c or grpc) are
	// spoken to in cleartext HTTP/2 through h2proxy.
	h2      bool
	h2proxy *httputil.ReverseProxy
}

// pick returns the next endpoint round-robin.
func (b *backend) pick() *endpointPool {
	n := b.next.Add(1)
	return b.endpoints[int(n%uint32(len(b.endpoints)))]
}

// untried returns an endpoint not in tried for a retry (the round-robin pick when it qualifies,
// else the first one left), or nil when every endpoint was tried.
func (b *backend) untried(tried map[*endpointPool]bool) *endpointPool {
	if len(tried) >= len(b.endpoints) {
		return nil
	}
	if o := b.pick(); !tried[o] {
		return o
	}
	for _, o := range b.endpoints {
		if !tried[o] {
			return o
		}
	}
	return nil
}

// poolSet owns one keep-alive pool per endpoint address. Pools outlive
// routing tables so that a table swap keeps warm connections.
type poolSet struct {
	dialTimeout time.Duration
	maxIdle     int
	mu          sync.Mutex
	pools       map[string]*endpointPool
}

func newPoolSet(dialTimeout time.Duration, maxIdle int) *poolSet {
	return &poolSet{dialTimeout: dialTimeout, maxIdle: maxIdle, pools: map[string]*endpointPool{}}
}

func (s *poolSet) get(addr string) *endpointPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[addr]
	if p == nil {
		p = &endpointPool{addr: addr, dialer: net.Dialer{Timeout: s.dialTimeout, KeepAlive: 30 * time.Second}, maxIdle: s.maxIdle}
		s.pools[addr] = p
	}
	return p
}

// retain closes the pools of addresses no longer in use. Requests still
// running on an old table keep working: a closed pool dials, and closes
// connections instead of keeping them.
func (s *poolSet) retain(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, p := range s.pools {
		if !keep[addr] {
			p.close()
			delete(s.pools, addr)
		}
	}
}

// closeAll closes every pool (shutdown).
func (s *poolSet) closeAll() { s.retain(nil) }

// endpointPool is the idle keep-alive connections to one endpoint, reused
// last-in first-out so that the warmest connection goes first.
type endpointPool struct {
	addr    string
	dialer  net.Dialer
	maxIdle int
	mu      sync.Mutex
	idle    []*backendConn
	closed  bool
}

// backendConn is one HTTP/1.1 connection to an endpoint, with its buffers.
type backendConn struct {
	pool *endpointPool
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	// deadline is the read deadline; all its readers set it through here.
	deadline lazyDeadline
}

// get returns an idle connection (reused=true) or dials a new one.
func (p *endpointPool) get(ctx context.Context) (bc *backendConn, reused bool, err error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		bc = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return bc, true, nil
	}
	p.mu.Unlock()
	bc, err = p.dial(ctx)
	return bc, false, err
}

func (p *endpointPool) dial(ctx context.Context) (*backendConn, error) {
	c, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to endpoint %s: %w", p.addr, err)
	}
	c = newRawConn(c)
	return &backendConn{pool: p, conn: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 4<<10)}, nil
}

// put returns a connection whose last response was read completely.
func (p *endpointPool) put(bc *backendConn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		bc.conn.Close()
		return
	}
	p.idle = append(p.idle, bc)
	p.mu.Unlock()
}

func (p *endpointPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, bc := range idle {
		bc.conn.Close()
	}
}

func (bc *backendConn) close() { bc.conn.Close() }

// alive reports whether an idle connection is still open: a backend that
// closed it (idle timeout) left an EOF to read. One non-blocking peek; it
// is used before sending a request that cannot be replayed.
func (bc *backendConn) alive() bool {
	if bc.br.Buffered() > 0 {
		return false // unsolicited bytes: the stream is out of step
	}
	sc, ok := bc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		alive = rerr == unix.EAGAIN || rerr == unix.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}
