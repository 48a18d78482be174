package ingress

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawConn is a TCP connection whose reads and writes are non-blocking
// system calls made without telling the Go scheduler (unix.RawSyscall)
// inside the runtime poller's wait loop (syscall.RawConn). A loopback or
// LAN write takes 10-50us in the kernel; made as an ordinary system call,
// one that spans a sysmon tick (20us) makes the runtime hand the only P to
// another thread, which with GOMAXPROCS=1 means two context switches per
// request: profiles showed a quarter of the proxy's CPU in
// finish_task_switch. The sockets are non-blocking, so a raw call never
// waits: EAGAIN returns to the poller, which parks the goroutine.
// Deadlines keep working: the poller enforces them.
type rawConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The callbacks and their arguments live with the connection so that a
	// Read or Write allocates no closure.
	rbuf, wbuf   []byte
	rn, wn       int
	rerr, werr   error
	readf, write func(fd uintptr) bool
}

// newRawConn wraps c when it is a TCP connection; other connections are
// returned as they are.
func newRawConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{TCPConn: tc, rc: rc}
	r.readf = func(fd uintptr) bool {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rbuf))), uintptr(len(r.rbuf)))
		for errno == unix.EINTR {
			n, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rbuf))), uintptr(len(r.rbuf)))
		}
		switch {
		case errno == unix.EAGAIN:
			return false
		case errno != 0:
			r.rn, r.rerr = 0, &net.OpError{Op: "read", Net: "tcp", Source: tc.LocalAddr(), Addr: tc.RemoteAddr(), Err: errno}
		case n == 0:
			r.rn, r.rerr = 0, io.EOF
		default:
			r.rn, r.rerr = int(n), nil
		}
		return true
	}
	r.write = func(fd uintptr) bool {
		for len(r.wbuf) > 0 {
			n, _, errno := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.wbuf))), uintptr(len(r.wbuf)))
			switch {
			case errno == unix.EAGAIN:
				return false
			case errno == unix.EINTR:
				continue
			case errno != 0:
				r.werr = &net.OpError{Op: "write", Net: "tcp", Source: tc.LocalAddr(), Addr: tc.RemoteAddr(), Err: errno}
				return true
			}
			r.wn += int(n)
			r.wbuf = r.wbuf[n:]
		}
		return true
	}
	return r
}

func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerr = p, 0, nil
	if err := r.rc.Read(r.readf); err != nil {
		// Closed or past its deadline: the poller's error, as net.Conn reports it.
		r.rbuf = nil
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	}
	r.rbuf = nil
	return r.rn, r.rerr
}

func (r *rawConn) Write(p []byte) (int, error) {
	r.wbuf, r.wn, r.werr = p, 0, nil
	if err := r.rc.Write(r.write); err != nil {
		r.wbuf = nil
		return r.wn, &net.OpError{Op: "write", Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	}
	r.wbuf = nil
	return r.wn, r.werr
}

// ReadFrom and WriteTo of the embedded TCPConn would bypass Read and
// Write (splice, sendfile); plain copies through the methods above are
// what the proxy wants for its small bodies.
func (r *rawConn) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{r}, src)
}

func (r *rawConn) WriteTo(dst io.Writer) (int64, error) {
	return io.Copy(dst, struct{ io.Reader }{r})
}
