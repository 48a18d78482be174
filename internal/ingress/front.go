package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// front serves one front listener (HTTP or HTTPS). The requests that make
// up nearly all traffic (HTTP/1.1, origin-form, a Content-Length body or
// none) are parsed in place from the connection's buffer and forwarded (or
// answered: 404, 503, 308) without net/http: no goroutine, context, map or
// timer per request, and no background read. A connection that brings
// anything else (HTTP/2 by ALPN, an Upgrade, Expect, a chunked request
// body, HTTP/1.0, a malformed or large head, a request to an h2c backend)
// is handed, from its first unread byte, to a net/http Server running the
// same handler, which serves it for the rest of its life: every rare and
// every malformed case keeps net/http's behaviour (400, 431...).
type front struct {
	l         *listener
	std       *http.Server
	handoff   *handoffListener
	tlsConfig *tls.Config // nil: plain HTTP

	readHeaderTimeout, idleTimeout time.Duration

	closing atomic.Bool
	mu      sync.Mutex
	ln      net.Listener
	conns   map[*frontConn]struct{}
	wg      sync.WaitGroup
}

// frontHeadBuffer bounds the request heads the lean path parses (larger
// ones, up to MaxHeaderBytes, go to net/http).
const frontHeadBuffer = 8 << 10

func newFront(l *listener, std *http.Server, tlsConfig *tls.Config, addr net.Addr) *front {
	return &front{
		l: l, std: std, tlsConfig: tlsConfig,
		handoff:           newHandoffListener(addr),
		readHeaderTimeout: std.ReadHeaderTimeout,
		idleTimeout:       std.IdleTimeout,
		conns:             map[*frontConn]struct{}{},
	}
}

// serve accepts on ln until shutdown; net/http serves the handed-off
// connections meanwhile.
func (f *front) serve(ln net.Listener) error {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	stdDone := make(chan error, 1)
	go func() { stdDone <- f.std.Serve(f.handoff) }()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.closing.Load() {
				<-stdDone
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// As net/http: back off on EMFILE and the like instead of spinning.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			f.handoff.Close()
			<-stdDone
			return fmt.Errorf("accept: %w", err)
		}
		tempDelay = 0
		f.wg.Add(1)
		go f.serveConn(c)
	}
}

// shutdown stops accepting, closes idle connections, lets requests in
// flight finish until ctx is done, then closes what is left.
func (f *front) shutdown(ctx context.Context) {
	f.closing.Store(true)
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
	}
	for fc := range f.conns {
		if fc.state.CompareAndSwap(connIdle, connClosed) {
			fc.conn.Close()
		}
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	f.std.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		f.mu.Lock()
		for fc := range f.conns {
			fc.conn.Close()
		}
		f.mu.Unlock()
		<-done
	}
}

func (f *front) serveConn(c net.Conn) {
	defer f.wg.Done()
	c = newRawConn(c)
	if f.tlsConfig != nil {
		tc := tls.Server(c, f.tlsConfig)
		if f.readHeaderTimeout > 0 {
			tc.SetDeadline(time.Now().Add(f.readHeaderTimeout))
		}
		if err := tc.Handshake(); err != nil {
			f.l.log.Debug("TLS handshake failed", "client", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			f.handoff.push(tc) // net/http sees a *tls.Conn and speaks HTTP/2
			return
		}
		c = tc
	}
	fc := &frontConn{f: f, conn: c, br: bufio.NewReaderSize(c, frontHeadBuffer), bw: bufio.NewWriterSize(c, 4<<10)}
	if ip, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		fc.clientIP = ip
	}
	f.mu.Lock()
	if f.closing.Load() {
		f.mu.Unlock()
		c.Close()
		return
	}
	f.conns[fc] = struct{}{}
	f.mu.Unlock()
	handoff := fc.serve()
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
	if handoff {
		f.handoff.push(&handoffConn{Conn: c, br: fc.br})
		return
	}
	c.Close()
}

// Connection states, so that shutdown closes only idle connections.
const (
	connIdle int32 = iota
	connBusy
	connClosed
)

// frontConn is one client connection on the lean path and the request it
// is serving (it is the exchange forwardExchange drives).
type frontConn struct {
	f        *front
	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	clientIP string
	state    atomic.Int32
	deadline lazyDeadline

	req  frontRequest
	resp []byte // response head being received, reused
	body respHead
	// bodyLeft is what the client still has to send of the request body.
	bodyLeft int64
	// broken means the client connection cannot carry another request.
	broken bool
}

// frontRequest is a parsed request head; its strings share head.
type frontRequest struct {
	head                string // request line and header lines, CRLF-terminated
	headers             string // the header lines of head
	method, uri, host   string
	contentLength       int64
	close, isHead       bool
	hasBody, noResponse bool
}

// serve runs requests until the connection ends; it returns true when the
// connection must be handed to net/http (nothing of the current request
// consumed).
func (fc *frontConn) serve() (handoff bool) {
	for {
		if fc.br.Buffered() == 0 {
			fc.setReadDeadline(fc.f.idleTimeout)
			if _, err := fc.br.Peek(1); err != nil {
				return false
			}
		}
		head, ok, err := fc.peekHead()
		if err != nil {
			return false
		}
		if !ok || !fc.parse(head) {
			return true
		}
		be, code, msg, location := fc.route()
		if be == nil && code == 0 {
			return true
		}
		if !fc.state.CompareAndSwap(connIdle, connBusy) {
			return false // shutting down
		}
		fc.br.Discard(len(head))
		if fc.req.contentLength > 0 {
			fc.bodyLeft = fc.req.contentLength
			fc.setReadDeadline(0) // bodies have no deadline, as in net/http without ReadTimeout
		}
		if be != nil {
			fc.f.l.forwardExchange(fc, be)
		} else {
			fc.answer(code, msg, location)
		}
		if fc.bodyLeft > 0 {
			// The backend answered without reading the whole body (or
			// failed): the rest of the stream is not a request.
			fc.broken = true
		}
		if err := fc.bw.Flush(); err != nil || fc.broken || fc.req.close {
			return false
		}
		fc.state.Store(connIdle)
		if fc.f.closing.Load() {
			return false
		}
	}
}

// setReadDeadline sets the client read deadline to about now+d (none
// when d is 0).
func (fc *frontConn) setReadDeadline(d time.Duration) {
	if d <= 0 {
		fc.deadline.set(fc.conn, time.Time{})
		return
	}
	fc.deadline.extend(fc.conn, d)
}

// lazyDeadline is a connection's read deadline, remembered so that moving
// it forward by less than a slack of min(1s, d/8) is skipped: a busy
// keep-alive connection then updates its runtime timer about once a second
// instead of once or twice per request, and a timeout of d fires after
// d-slack to d.
type lazyDeadline struct{ at time.Time }

// set sets the deadline to t exactly (zero: none).
func (ld *lazyDeadline) set(c net.Conn, t time.Time) {
	if t.Equal(ld.at) {
		return
	}
	ld.at = t
	c.SetReadDeadline(t)
}

// extend makes the deadline fall between now+d-slack and now+d.
func (ld *lazyDeadline) extend(c net.Conn, d time.Duration) {
	want := time.Now().Add(d)
	if !ld.at.IsZero() && !ld.at.After(want) && want.Sub(ld.at) < min(time.Second, d/8) {
		return
	}
	ld.at = want
	c.SetReadDeadline(want)
}

var crlfcrlf = []byte("\r\n\r\n")

// peekHead returns the buffered request head (through the blank line)
// without consuming it; ok is false when the lean path does not take it
// (too large, bare LF line ends).
func (fc *frontConn) peekHead() (head []byte, ok bool, err error) {
	headerDeadline := false
	for {
		buf, _ := fc.br.Peek(fc.br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return buf[:i+4], true, nil
		}
		if bytes.Contains(buf, []byte("\n\n")) || fc.br.Buffered() >= fc.br.Size() {
			return nil, false, nil
		}
		if !headerDeadline {
			fc.setReadDeadline(fc.f.readHeaderTimeout)
			headerDeadline = true
		}
		if _, err := fc.br.Peek(fc.br.Buffered() + 1); err != nil {
			return nil, false, err
		}
	}
}

// parse reads a request head into fc.req. It returns false for anything
// the lean path leaves to net/http: every malformed request among them.
func (fc *frontConn) parse(b []byte) bool {
	r := &fc.req
	*r = frontRequest{head: string(b), contentLength: -1}
	h := r.head[:len(r.head)-2] // keep each line's CRLF, drop the blank line
	line, rest, _ := strings.Cut(h, "\r\n")
	r.headers = rest
	method, rest1, ok1 := strings.Cut(line, " ")
	uri, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == "" || !validToken([]byte(method)) || !cleanURI(uri) {
		return false
	}
	r.method, r.uri = method, uri
	hosts := 0
	for rest != "" {
		var l string
		l, rest, _ = strings.Cut(rest, "\r\n")
		i := strings.IndexByte(l, ':')
		if i <= 0 || !validToken([]byte(l[:i])) || !validValue(l[i+1:]) {
			return false // also obs-fold: the line starts with a space
		}
		k, v := l[:i], strings.Trim(l[i+1:], " \t")
		switch {
		case headerIs(k, "Host"):
			hosts++
			r.host = v
		case headerIs(k, "Content-Length"):
			if r.contentLength >= 0 {
				return false
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v[0] == '+' {
				return false
			}
			r.contentLength = n
		case headerIs(k, "Connection"):
			for _, t := range strings.Split(v, ",") {
				switch t = strings.Trim(t, " \t"); {
				case strings.EqualFold(t, "close"):
					r.close = true
				case t == "" || strings.EqualFold(t, "keep-alive"):
				default:
					return false // tokens naming headers to drop, or upgrade
				}
			}
		case headerIs(k, "Transfer-Encoding"), headerIs(k, "Expect"), headerIs(k, "Upgrade"):
			return false
		}
	}
	if hosts != 1 || !validHost(r.host) {
		return false
	}
	r.isHead = method == http.MethodHead
	r.hasBody = r.contentLength > 0
	return true
}

// cleanURI accepts origin-form targets whose path routing can read as is:
// no escapes (net/http routes on the unescaped path), no fragment, no
// control or non-ASCII bytes.
func cleanURI(u string) bool {
	if u == "" || u[0] != '/' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts the usual host[:port] characters; anything else goes
// to net/http, which rejects what is invalid.
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == ':' || c == '_' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

func headerIs(k, name string) bool { return len(k) == len(name) && strings.EqualFold(k, name) }

// route returns the backend of a request, or the status, message (and
// Location) the proxy answers itself: the same answers as ServeHTTP. It
// returns neither for a request net/http must serve (an h2c backend).
func (fc *frontConn) route() (be *backend, code int, msg, location string) {
	t := fc.f.l.table.Load()
	if t == nil {
		return nil, http.StatusServiceUnavailable, "the ingress controller has not synced with the Kubernetes API yet", ""
	}
	p, _, _ := strings.Cut(fc.req.uri, "?")
	if rt := t.lookup(requestHost(fc.req.host), cleanRequestPath(p)); rt != nil {
		if rt.sslRedirect && !fc.f.l.tls {
			return nil, http.StatusPermanentRedirect, "use HTTPS", fc.f.l.redirectURL(fc.req.host, fc.req.uri)
		}
		be = rt.backend
	} else {
		be = t.defaultBackend
	}
	switch {
	case be == nil:
		return nil, http.StatusNotFound, "no Ingress rule matches this host and path", ""
	case be.unavailable != "":
		return nil, http.StatusServiceUnavailable, "backend " + be.name + ": " + be.unavailable, ""
	case len(be.endpoints) == 0:
		return nil, http.StatusServiceUnavailable, "backend " + be.name + " has no ready endpoints", ""
	case be.h2proxy != nil:
		return nil, 0, "", ""
	}
	return be, 0, "", ""
}

// The exchange methods: forwardExchange drives them.

func (fc *frontConn) context() context.Context { return context.Background() }

func (fc *frontConn) replayable() bool {
	if fc.req.contentLength > 0 {
		return false
	}
	switch fc.req.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// rawSkip reports a request header the proxy does not pass on as
// received (see skipRequestHeader).
func rawSkip(k string) bool {
	switch len(k) {
	case 2:
		return headerIs(k, "Te")
	case 4:
		return headerIs(k, "Host")
	case 7:
		return headerIs(k, "Trailer") || headerIs(k, "Upgrade")
	case 10:
		return headerIs(k, "Connection") || headerIs(k, "Keep-Alive")
	case 14:
		return headerIs(k, "Content-Length")
	case 15:
		return headerIs(k, "X-Forwarded-For")
	case 16:
		return headerIs(k, "Proxy-Connection") || headerIs(k, "X-Forwarded-Host") || headerIs(k, "X-Forwarded-Port")
	case 17:
		return headerIs(k, "X-Forwarded-Proto") || headerIs(k, "Transfer-Encoding")
	case 18:
		return headerIs(k, "Proxy-Authenticate")
	case 19:
		return headerIs(k, "Proxy-Authorization")
	}
	return false
}

func (fc *frontConn) send(l *listener, bc *backendConn) error {
	r, bw := &fc.req, bc.bw
	bw.WriteString(r.method)
	bw.WriteByte(' ')
	bw.WriteString(r.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.host)
	bw.WriteString("\r\n")
	for rest := r.headers; rest != ""; {
		i := strings.Index(rest, "\r\n")
		line := rest[:i+2]
		rest = rest[i+2:]
		if rawSkip(line[:strings.IndexByte(line, ':')]) {
			continue
		}
		bw.WriteString(line)
	}
	if fc.clientIP != "" {
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(fc.clientIP)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Proto: ")
	bw.WriteString(l.scheme)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(r.host)
	bw.WriteString("\r\nX-Forwarded-Port: ")
	bw.WriteString(l.port)
	bw.WriteString("\r\n")
	switch {
	case r.contentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.contentLength, 10))
		bw.WriteString("\r\n\r\n")
		n, err := io.CopyN(bw, fc.br, fc.bodyLeft)
		fc.bodyLeft -= n
		if err != nil {
			return fmt.Errorf("copy request body: %w", err)
		}
	case r.method == http.MethodPost || r.method == http.MethodPut || r.method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n\r\n")
	default:
		bw.WriteString("\r\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errNoResponse, err)
	}
	return nil
}

// receive reads the backend's response head into fc.resp as the head the
// client will get: status line, end-to-end headers, framing of this hop.
func (fc *frontConn) receive(l *listener, bc *backendConn) error {
	br := bc.br
	// The deadline stays when the connection goes back to its pool: every
	// reader of a backend connection sets its own before reading.
	bc.deadline.extend(bc.conn, l.backendTimeout)
	if _, err := br.Peek(1); err != nil {
		return noResponse(err)
	}
	h := &fc.body
	for {
		*h = respHead{contentLength: -1}
		fc.resp = fc.resp[:0]
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("read status line: %w", err)
		}
		code, http10, err := parseStatusLine(line)
		if err != nil {
			return err
		}
		h.status, h.close = code, http10
		fc.resp = append(fc.resp, "HTTP/1.1 "...)
		fc.resp = append(fc.resp, line[9:]...)
		if len(line) == 12 {
			fc.resp = append(fc.resp, ' ')
			fc.resp = append(fc.resp, http.StatusText(code)...)
		}
		fc.resp = append(fc.resp, "\r\n"...)
		var connTokens []string
		hasDate := false
		for {
			line, err := readLine(br)
			if err != nil {
				return fmt.Errorf("read response header: %w", err)
			}
			if len(line) == 0 {
				break
			}
			k, val, err := splitHeaderLine(line)
			if err != nil {
				return err
			}
			switch {
			case bytesHeaderIs(k, "Content-Length"):
				if err := h.setContentLength(val); err != nil {
					return err
				}
				continue // written below, once
			case bytesHeaderIs(k, "Transfer-Encoding"):
				if err := h.setTransferEncoding(val, http10); err != nil {
					return err
				}
				continue
			case bytesHeaderIs(k, "Connection"):
				connTokens = h.connectionTokens(val, http10, connTokens)
				continue
			case bytesHeaderIs(k, "Keep-Alive"), bytesHeaderIs(k, "Proxy-Connection"), bytesHeaderIs(k, "Te"),
				bytesHeaderIs(k, "Trailer"), bytesHeaderIs(k, "Upgrade"):
				continue
			case bytesHeaderIs(k, "Date"):
				hasDate = true
			}
			fc.resp = append(fc.resp, k...)
			fc.resp = append(fc.resp, ": "...)
			fc.resp = append(fc.resp, val...)
			fc.resp = append(fc.resp, "\r\n"...)
		}
		if code >= 100 && code < 200 {
			if code == http.StatusSwitchingProtocols {
				return errors.New("101 Switching Protocols to a request without Upgrade")
			}
			continue // 100 Continue, 103 Early Hints: not forwarded
		}
		if len(connTokens) > 0 {
			fc.resp = dropHeaders(fc.resp, connTokens)
		}
		if !hasDate {
			fc.resp = append(fc.resp, "Date: "...)
			fc.resp = time.Now().UTC().AppendFormat(fc.resp, http.TimeFormat)
			fc.resp = append(fc.resp, "\r\n"...)
		}
		break
	}
	if h.chunked {
		h.contentLength = -1
	}
	if fc.req.isHead || h.status == http.StatusNoContent || h.status == http.StatusNotModified {
		h.noBody = true
	}
	return nil
}

func bytesHeaderIs(k []byte, name string) bool {
	return len(k) == len(name) && strings.EqualFold(string(k), name)
}

// dropHeaders removes from a response head the header lines a Connection
// header listed (hop-by-hop by the backend's word).
func dropHeaders(head []byte, names []string) []byte {
	out := head[:0]
	for rest := head; len(rest) > 0; {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i+2]
		rest = rest[i+2:]
		drop := false
		if c := bytes.IndexByte(line, ':'); c > 0 {
			for _, n := range names {
				if bytesHeaderIs(line[:c], n) {
					drop = true
					break
				}
			}
		}
		if !drop {
			out = append(out, line...) // never ahead of rest: in-place filtering
		}
	}
	return out
}

func (fc *frontConn) discard() { fc.resp = fc.resp[:0] }

// reply writes the response head and body to the client. Bodies keep the
// backend's length when it sent one; others are chunked to the client.
func (fc *frontConn) reply(l *listener, bc *backendConn) {
	h, bw := &fc.body, fc.bw
	bw.Write(fc.resp)
	switch {
	case h.contentLength >= 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(h.contentLength, 10))
		bw.WriteString("\r\n")
	case !h.noBody:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if fc.req.close || fc.f.closing.Load() {
		fc.req.close = true
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	reusable := !h.close
	var err error
	switch {
	case h.noBody:
	case h.contentLength >= 0:
		err = fc.copyN(l, bc, h.contentLength)
	default:
		cw := newChunkWriter(bw)
		if h.chunked {
			err = l.copyChunked(flushWriter{cw, bw}, bc)
		} else {
			reusable = false
			err = l.copyUntilEOF(flushWriter{cw, bw}, bc)
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		if err == nil {
			bw.WriteString("0\r\n\r\n")
		}
	}
	if err != nil {
		// The client got a head and part of a body: cut its connection so
		// that it cannot mistake the truncated body for a complete one.
		bc.close()
		fc.broken = true
		return
	}
	if reusable {
		bc.pool.put(bc)
	} else {
		bc.close()
	}
}

// copyN copies a Content-Length body from the backend's read buffer to the
// client, flushing whenever the next backend read would block.
func (fc *frontConn) copyN(l *listener, bc *backendConn, n int64) error {
	br := bc.br
	for n > 0 {
		if br.Buffered() == 0 {
			if err := fc.bw.Flush(); err != nil {
				return err
			}
			bc.deadline.extend(bc.conn, l.backendTimeout)
			if _, err := br.Peek(1); err != nil {
				return fmt.Errorf("read response body: %w", err)
			}
		}
		k := int(min(int64(br.Buffered()), n))
		b, _ := br.Peek(k)
		if _, err := fc.bw.Write(b); err != nil {
			return err
		}
		br.Discard(k)
		n -= int64(k)
	}
	return nil
}

// fail answers an error the way httpError does on the net/http path.
func (fc *frontConn) fail(code int, msg string) { fc.answer(code, msg, "") }

// answer writes the proxy's own response (an error or a redirect) as
// httpError does. A request body the client is still sending is not read:
// the connection closes after the answer.
func (fc *frontConn) answer(code int, msg, location string) {
	body := fmt.Sprintf("%d %s: %s\n", code, http.StatusText(code), msg)
	bw := fc.bw
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	if location != "" {
		bw.WriteString("Location: ")
		bw.WriteString(location)
		bw.WriteString("\r\n")
	}
	fmt.Fprintf(bw, "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: %s\r\nContent-Length: %d\r\n",
		time.Now().UTC().Format(http.TimeFormat), len(body))
	if fc.bodyLeft > 0 || fc.req.close {
		fc.req.close = true
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if !fc.req.isHead {
		bw.WriteString(body)
	}
}

// chunkWriter writes each Write as one HTTP/1.1 chunk.
type chunkWriter struct{ bw *bufio.Writer }

func newChunkWriter(bw *bufio.Writer) chunkWriter { return chunkWriter{bw} }

func (c chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	c.bw.WriteString("\r\n")
	c.bw.Write(p)
	_, err := c.bw.WriteString("\r\n")
	return len(p), err
}

// flushWriter adapts a chunk writer to the http.ResponseWriter that the
// shared body copiers take (they flush when the backend would block).
type flushWriter struct {
	chunkWriter
	bw *bufio.Writer
}

func (w flushWriter) Header() http.Header { return nil }
func (w flushWriter) WriteHeader(int)     {}
func (w flushWriter) Flush()              { w.bw.Flush() }

// handoffListener is how the lean path gives connections to net/http.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoffListener) push(c net.Conn) {
	select {
	case h.conns <- c:
	case <-h.done:
		c.Close()
	}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// handoffConn is a client connection whose first bytes are still in the
// lean path's read buffer.
type handoffConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *handoffConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// CloseWrite half-closes the connection (a websocket passed through
// after net/http hijacked it), as a *net.TCPConn does.
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
