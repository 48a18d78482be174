package ingress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is the request path shared by the HTTP and HTTPS listeners.
type proxy struct {
	table          *atomic.Pointer[table]
	log            *slog.Logger
	backendTimeout time.Duration
	httpsPort      string // for redirects; "" when 443
	bufs           sync.Pool
}

// listener is one front listener: a proxy plus what the listener adds to
// requests (scheme and port for X-Forwarded-*, whether TLS was used).
type listener struct {
	*proxy
	tls    bool
	scheme string
	port   string
}

func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := l.table.Load()
	if t == nil {
		httpError(w, http.StatusServiceUnavailable, "the ingress controller has not synced with the Kubernetes API yet")
		return
	}
	host := requestHost(r.Host)
	rt := t.lookup(host, cleanRequestPath(r.URL.Path))
	var be *backend
	switch {
	case rt != nil:
		if rt.sslRedirect && !l.tls {
			l.redirect(w, r)
			return
		}
		be = rt.backend
	case t.defaultBackend != nil:
		be = t.defaultBackend
	default:
		httpError(w, http.StatusNotFound, "no Ingress rule matches this host and path")
		return
	}
	if be.unavailable != "" {
		httpError(w, http.StatusServiceUnavailable, "backend "+be.name+": "+be.unavailable)
		return
	}
	if len(be.endpoints) == 0 {
		httpError(w, http.StatusServiceUnavailable, "backend "+be.name+" has no ready endpoints")
		return
	}
	if be.h2proxy != nil {
		be.h2proxy.ServeHTTP(w, r.WithContext(withListener(r.Context(), l)))
		return
	}
	if r.ProtoMajor == 1 && isUpgrade(r.Header) {
		l.upgrade(w, r, be)
		return
	}
	l.forward(w, r, be)
}

func (l *listener) redirect(w http.ResponseWriter, r *http.Request) {
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		uri = r.URL.RequestURI()
	}
	w.Header().Set("Location", l.redirectURL(r.Host, uri))
	httpError(w, http.StatusPermanentRedirect, "use HTTPS")
}

// redirectURL is the HTTPS URL of a request: its host on the HTTPS port.
func (l *listener) redirectURL(host, uri string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	if l.httpsPort != "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), l.httpsPort)
	}
	return "https://" + host + uri
}

func httpError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d %s: %s\n", code, http.StatusText(code), msg)
}

// replayable reports whether a request may be sent again after a
// connection failure: idempotent and without a body.
func replayable(r *http.Request) bool {
	if r.ContentLength != 0 || (r.Body != nil && r.Body != http.NoBody) {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// errNoResponse marks a failure before any byte of a response arrived, so
// that the request was not (visibly) processed.
var errNoResponse = errors.New("backend closed the connection before responding")

// exchange is the client side of one request being forwarded: a net/http
// request (stdExchange) or one read by the lean HTTP/1.1 front (frontConn).
// forward drives it; it owns the retry policy, the exchange owns the bytes.
type exchange interface {
	context() context.Context
	replayable() bool
	// send writes the request to the backend connection.
	send(l *listener, bc *backendConn) error
	// receive reads the response head (its failure closes bc).
	receive(l *listener, bc *backendConn) error
	// discard forgets a response head received from a failed attempt.
	discard()
	// reply sends the response to the client and returns bc to its pool
	// when the exchange left it reusable.
	reply(l *listener, bc *backendConn)
	fail(code int, msg string)
}

// stdExchange is a request net/http read.
type stdExchange struct {
	w    http.ResponseWriter
	r    *http.Request
	head respHead
}

func (e *stdExchange) context() context.Context { return e.r.Context() }
func (e *stdExchange) replayable() bool         { return replayable(e.r) }
func (e *stdExchange) send(l *listener, bc *backendConn) error {
	return l.writeRequest(bc, e.r, nil)
}
func (e *stdExchange) receive(l *listener, bc *backendConn) error {
	return readResponseHead(bc, e.w.Header(), &e.head, e.r.Method == http.MethodHead, l.backendTimeout)
}
func (e *stdExchange) discard()                           { clear(e.w.Header()) }
func (e *stdExchange) reply(l *listener, bc *backendConn) { l.copyResponse(e.w, bc, &e.head) }
func (e *stdExchange) fail(code int, msg string)          { httpError(e.w, code, msg) }

// noResponse classifies a failure to read the first byte of a response:
// the backend closed or reset the connection (errNoResponse, which allows a
// retry), unless it simply did not answer in time (a timeout, never
// retried: that would double the wait before the 504).
func noResponse(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("wait for the response: %w", err)
	}
	return fmt.Errorf("%w: %w", errNoResponse, err)
}

// forward sends the request over a pooled HTTP/1.1 connection and copies
// the response back.
func (l *listener) forward(w http.ResponseWriter, r *http.Request, be *backend) {
	l.forwardExchange(&stdExchange{w: w, r: r}, be)
}

// forwardExchange runs one request against a backend: round-robin endpoint,
// keep-alive connection, and the retries a connection failure allows.
func (l *listener) forwardExchange(ex exchange, be *backend) {
	ctx := ex.context()
	replay := ex.replayable()
	ep := be.pick()
	retriedStale := false
	var tried map[*endpointPool]bool // endpoints that failed; made on the first retry
	for {
		// While another endpoint is left to try, a connect gets failoverDial, not the full
		// DialTimeout: a pod that just went away can leave a neighbour entry behind, and its
		// SYNs vanish on the bridge instead of being refused (a rolling update lost requests
		// waiting on such connects until the client gave up).
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if len(be.endpoints)-len(tried) > 1 {
			dctx, cancel = context.WithTimeout(ctx, failoverDial)
		}
		bc, reused, err := ep.get(dctx)
		if err == nil && reused && !replay && !bc.alive() {
			bc.close()
			bc, reused, err = nil, false, nil
			bc, err = ep.dial(dctx)
		}
		cancel()
		if err == nil {
			if err = ex.send(l, bc); err == nil {
				err = ex.receive(l, bc)
			}
			if err != nil {
				bc.close()
				ex.discard()
			}
		}
		if err == nil {
			ex.reply(l, bc)
			return
		}
		if ctx.Err() != nil {
			return // the client went away
		}
		switch {
		case reused && !retriedStale && replay && errors.Is(err, errNoResponse):
			// A keep-alive connection the endpoint had closed: try a new one.
			retriedStale = true
			continue
		case isConnectError(err) || (replay && errors.Is(err, errNoResponse)):
			// The endpoint refused the connection (nothing was sent: safe for any request),
			// or closed it before answering a replayable one: typically a pod that is
			// terminating while the EndpointSlice update is on its way. Try the next one,
			// each endpoint at most once, as HAProxy's redispatch does.
			if tried == nil {
				tried = make(map[*endpointPool]bool, len(be.endpoints))
			}
			tried[ep] = true
			if o := be.untried(tried); o != nil {
				l.log.Debug("retry on another endpoint", "backend", be.name, "endpoint", ep.addr, "err", err)
				ep, retriedStale = o, false
				continue
			}
		}
		l.log.Warn("backend request failed", "backend", be.name, "endpoint", ep.addr, "err", err)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !isConnectError(err) {
			ex.fail(http.StatusGatewayTimeout, "backend "+be.name+" did not answer in time")
			return
		}
		ex.fail(http.StatusBadGateway, "backend "+be.name+" failed")
		return
	}
}

// failoverDial bounds a connect while other endpoints remain. A connect to a live endpoint of
// the cluster takes well under a millisecond (the kernel answers the SYN even when the server
// process is starved of CPU).
const failoverDial = time.Second

// isConnectError reports a failure to establish the connection, after
// which the backend surely did not see the request.
func isConnectError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 7.6.1), plus Expect (the server already answered it) and the
// X-Forwarded-* headers this proxy sets itself.
func skipRequestHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Expect", "Content-Length",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port":
		return true
	}
	return false
}

// writeRequest writes the request head and body to the backend: method and
// URI as received, Host unchanged, end-to-end headers, X-Forwarded-*, and
// a body framed by this proxy (never by the client's framing headers).
// upgrade is the Upgrade header value to pass through, or nil.
func (l *listener) writeRequest(bc *backendConn, r *http.Request, upgrade []string) error {
	bw := bc.bw
	uri := r.RequestURI
	if uri == "" || (uri[0] != '/' && uri != "*") {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	var connTokens []string
	if c := r.Header["Connection"]; len(c) > 0 {
		connTokens = connectionTokens(c)
	}
	for k, vv := range r.Header {
		if skipRequestHeader(k) || (connTokens != nil && tokenListed(connTokens, k)) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Proto: ")
	bw.WriteString(l.scheme)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\nX-Forwarded-Port: ")
	bw.WriteString(l.port)
	bw.WriteString("\r\n")
	if upgrade != nil {
		bw.WriteString("Connection: Upgrade\r\n")
		for _, v := range upgrade {
			bw.WriteString("Upgrade: ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	hasBody := r.Body != nil && r.Body != http.NoBody
	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		if _, err := io.CopyN(bw, r.Body, r.ContentLength); err != nil {
			return fmt.Errorf("copy request body: %w", err)
		}
	case hasBody && r.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(bw)
		buf := l.buffer()
		_, err := io.CopyBuffer(cw, r.Body, *buf)
		l.bufs.Put(buf)
		if err != nil {
			return fmt.Errorf("copy request body: %w", err)
		}
		cw.Close()
		bw.WriteString("\r\n")
	default:
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			bw.WriteString("Content-Length: 0\r\n")
		}
		bw.WriteString("\r\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errNoResponse, err)
	}
	return nil
}

func (l *listener) buffer() *[]byte {
	if b, ok := l.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 32<<10)
	return &b
}

func connectionTokens(vv []string) []string {
	var toks []string
	for _, v := range vv {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				toks = append(toks, t)
			}
		}
	}
	return toks
}

func tokenListed(toks []string, k string) bool {
	for _, t := range toks {
		if strings.EqualFold(t, k) {
			return true
		}
	}
	return false
}

func isUpgrade(h http.Header) bool {
	return len(h["Upgrade"]) > 0 && tokenListed(connectionTokens(h["Connection"]), "upgrade")
}

// respHead is what the proxy needs from a response head besides headers.
type respHead struct {
	status        int
	contentLength int64 // -1: unknown
	chunked       bool
	close         bool // the backend will close the connection after it
	noBody        bool
	upgrade       []string // Upgrade values of a 101 response
}

// parseStatusLine reads "HTTP/1.x NNN reason" as both response readers accept it.
func parseStatusLine(line []byte) (code int, http10 bool, err error) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("malformed status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || code > 999 || (len(line) > 12 && line[12] != ' ') {
		return 0, false, fmt.Errorf("malformed status line %q", line)
	}
	return code, line[7] == '0', nil
}

// splitHeaderLine splits "Name: value" and checks the name.
func splitHeaderLine(line []byte) (name, val []byte, err error) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 || line[0] == ' ' || line[0] == '\t' || !validToken(line[:i]) {
		return nil, nil, fmt.Errorf("malformed response header line %q", line)
	}
	return line[:i], bytes.TrimSpace(line[i+1:]), nil
}

// setContentLength records a Content-Length value; repeated values must agree.
func (h *respHead) setContentLength(val []byte) error {
	n, err := strconv.ParseInt(string(val), 10, 64)
	if err != nil || n < 0 || (h.contentLength >= 0 && h.contentLength != n) {
		return fmt.Errorf("bad Content-Length %q", val)
	}
	h.contentLength = n
	return nil
}

// setTransferEncoding records chunked framing. "identity", or anything in an HTTP/1.0
// response, means nothing; other encodings are refused.
func (h *respHead) setTransferEncoding(val []byte, http10 bool) error {
	if bytes.EqualFold(val, []byte("chunked")) {
		h.chunked = true
		return nil
	}
	if http10 || bytes.EqualFold(val, []byte("identity")) {
		return nil
	}
	return fmt.Errorf("unsupported Transfer-Encoding %q", val)
}

// connectionTokens applies a Connection header's close/keep-alive to h and returns the other
// tokens it names (headers to drop), except upgrade.
func (h *respHead) connectionTokens(val []byte, http10 bool, tokens []string) []string {
	for _, t := range strings.Split(string(val), ",") {
		t = strings.TrimSpace(t)
		switch {
		case strings.EqualFold(t, "close"):
			h.close = true
		case strings.EqualFold(t, "keep-alive"):
			if http10 {
				h.close = false
			}
		case t != "" && !strings.EqualFold(t, "upgrade"):
			tokens = append(tokens, t)
		}
	}
	return tokens
}

// readResponseHead parses a response head into hdr (the client response's
// header map, so no second map is allocated), dropping hop-by-hop headers
// and skipping 1xx interim responses other than 101.
func readResponseHead(bc *backendConn, hdr http.Header, h *respHead, isHead bool, timeout time.Duration) error {
	br := bc.br
	bc.deadline.set(bc.conn, time.Now().Add(timeout))
	defer bc.deadline.set(bc.conn, time.Time{})
	if _, err := br.Peek(1); err != nil {
		return noResponse(err)
	}
	for {
		*h = respHead{contentLength: -1}
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("read status line: %w", err)
		}
		code, http10, err := parseStatusLine(line)
		if err != nil {
			return err
		}
		h.status = code
		h.close = http10
		var connTokens []string
		for {
			line, err := readLine(br)
			if err != nil {
				return fmt.Errorf("read response header: %w", err)
			}
			if len(line) == 0 {
				break
			}
			name, val, err := splitHeaderLine(line)
			if err != nil {
				return err
			}
			key := canonicalKey(name)
			switch key {
			case "Content-Length":
				if err := h.setContentLength(val); err != nil {
					return err
				}
				hdr[key] = []string{string(val)}
			case "Transfer-Encoding":
				if err := h.setTransferEncoding(val, http10); err != nil {
					return err
				}
			case "Connection":
				connTokens = h.connectionTokens(val, http10, connTokens)
			case "Upgrade":
				h.upgrade = append(h.upgrade, string(val))
			case "Keep-Alive", "Proxy-Connection", "Te", "Trailer":
			default:
				hdr[key] = append(hdr[key], string(val))
			}
		}
		for _, k := range connTokens {
			delete(hdr, textproto.CanonicalMIMEHeaderKey(k))
		}
		if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			clear(hdr)
			continue // 100 Continue, 103 Early Hints: not forwarded
		}
		break
	}
	if h.chunked {
		delete(hdr, "Content-Length")
		h.contentLength = -1
	}
	if isHead || h.status == http.StatusNoContent || h.status == http.StatusNotModified || h.status == http.StatusSwitchingProtocols {
		h.noBody = true
	}
	if _, ok := hdr["Content-Type"]; !ok {
		hdr["Content-Type"] = nil // no sniffing: forward what the backend sent
	}
	return nil
}

// readLine reads one CRLF- or LF-terminated line; a line longer than the
// read buffer (16 KiB) is an error.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("response header line over 16 KiB")
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func validToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// commonKeys interns the canonical form of frequent response headers, so
// that parsing them allocates no key string. Read-only after init.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Cache-Control", "Connection",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Range",
		"Content-Security-Policy", "Content-Type", "Date", "Etag", "Expires", "Keep-Alive", "Last-Modified",
		"Location", "Pragma", "Proxy-Connection", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Vary", "Via", "Www-Authenticate", "X-Content-Type-Options",
		"X-Frame-Options", "X-Request-Id", "X-Xss-Protection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol",
		"Sec-Websocket-Extensions", "Alt-Svc", "Grpc-Status", "Grpc-Message"} {
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	m["ETag"] = "Etag"
	return m
}()

func canonicalKey(b []byte) string {
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
}

// copyResponse sends the response head and body to the client and returns
// the backend connection to its pool when the exchange left it reusable.
func (l *listener) copyResponse(w http.ResponseWriter, bc *backendConn, h *respHead) {
	w.WriteHeader(h.status)
	reusable := !h.close
	var err error
	switch {
	case h.noBody:
	case h.contentLength >= 0:
		err = l.copyN(w, bc, h.contentLength)
	case h.chunked:
		err = l.copyChunked(w, bc)
	default:
		// Delimited by the backend closing the connection.
		reusable = false
		err = l.copyUntilEOF(w, bc)
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		bc.close()
		// The client got a head and part of a body: cut its connection so
		// that it cannot mistake the truncated body for a complete one.
		panic(http.ErrAbortHandler)
	}
	if reusable {
		bc.pool.put(bc)
	} else {
		bc.close()
	}
}

// copyN copies a Content-Length body straight out of the connection's read
// buffer, flushing to the client whenever the next read would block, so
// that slow streams are not held back.
func (l *listener) copyN(w http.ResponseWriter, bc *backendConn, n int64) error {
	br := bc.br
	for n > 0 {
		if br.Buffered() == 0 {
			if n > 0 {
				flush(w)
			}
			bc.deadline.set(bc.conn, time.Now().Add(l.backendTimeout))
			_, err := br.Peek(1)
			bc.deadline.set(bc.conn, time.Time{})
			if err != nil {
				return fmt.Errorf("read response body: %w", err)
			}
		}
		k := int(min(int64(br.Buffered()), n))
		b, _ := br.Peek(k)
		if _, err := w.Write(b); err != nil {
			return err
		}
		br.Discard(k)
		n -= int64(k)
	}
	return nil
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func (l *listener) copyChunked(w http.ResponseWriter, bc *backendConn) error {
	cr := httputil.NewChunkedReader(bc.br)
	buf := l.buffer()
	defer l.bufs.Put(buf)
	for {
		if bc.br.Buffered() == 0 {
			flush(w)
			bc.deadline.set(bc.conn, time.Now().Add(l.backendTimeout))
		}
		n, err := cr.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read chunked response body: %w", err)
		}
	}
	// Trailers (dropped) up to the blank line that ends the message.
	for {
		line, err := readLine(bc.br)
		if err != nil {
			return fmt.Errorf("read response trailer: %w", err)
		}
		if len(line) == 0 {
			bc.deadline.set(bc.conn, time.Time{})
			return nil
		}
	}
}

func (l *listener) copyUntilEOF(w http.ResponseWriter, bc *backendConn) error {
	buf := l.buffer()
	defer l.bufs.Put(buf)
	for {
		if bc.br.Buffered() == 0 {
			flush(w)
			bc.deadline.set(bc.conn, time.Now().Add(l.backendTimeout))
		}
		n, err := bc.br.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
