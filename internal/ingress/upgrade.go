package ingress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// upgrade passes an HTTP/1.1 Upgrade request (websocket) through on a
// dedicated backend connection: after the backend's 101, bytes are copied
// both ways until either side closes.
func (l *listener) upgrade(w http.ResponseWriter, r *http.Request, be *backend) {
	ep := be.pick()
	bc, err := ep.dial(r.Context())
	// A refused dial sent nothing: try the other endpoints, each once.
	tried := map[*endpointPool]bool{}
	for err != nil && isConnectError(err) {
		tried[ep] = true
		o := be.untried(tried)
		if o == nil {
			break
		}
		ep = o
		bc, err = ep.dial(r.Context())
	}
	if err != nil {
		l.log.Warn("backend upgrade failed", "backend", be.name, "endpoint", ep.addr, "err", err)
		httpError(w, http.StatusBadGateway, "backend "+be.name+" failed")
		return
	}
	hdr := w.Header()
	var head respHead
	if err = l.writeRequest(bc, r, r.Header["Upgrade"]); err == nil {
		err = readResponseHead(bc, hdr, &head, false, l.backendTimeout)
	}
	if err != nil {
		bc.close()
		clear(hdr)
		l.log.Warn("backend upgrade failed", "backend", be.name, "endpoint", ep.addr, "err", err)
		httpError(w, http.StatusBadGateway, "backend "+be.name+" failed")
		return
	}
	if head.status != http.StatusSwitchingProtocols {
		head.close = true // a dedicated connection: never pooled
		l.copyResponse(w, bc, &head)
		return
	}
	defer bc.close()
	client, crw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		l.log.Warn("cannot take over the client connection for an upgrade", "err", err)
		return
	}
	defer client.Close()
	client.SetDeadline(time.Time{})
	delete(hdr, "Content-Type")
	crw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
	for _, v := range head.upgrade {
		crw.WriteString("Upgrade: " + v + "\r\n")
	}
	hdr.Write(crw)
	crw.WriteString("\r\n")
	if err := crw.Flush(); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		io.Copy(bc.conn, crw.Reader) // drains bytes the server had buffered first
		closeWrite(bc.conn)
	}()
	go func() {
		defer wg.Done()
		io.Copy(client, bc.br)
		closeWrite(client)
	}()
	wg.Wait()
}

// closeWrite half-closes a TCP connection so that the peer sees EOF while
// the other direction keeps flowing.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

type listenerKey struct{}

func withListener(ctx context.Context, l *listener) context.Context {
	return context.WithValue(ctx, listenerKey{}, l)
}

// newH2Transport is the cleartext HTTP/2 (prior knowledge) transport of
// backends whose Service port has appProtocol kubernetes.io/h2c or grpc.
func newH2Transport(dialTimeout time.Duration) *http.Transport {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		ResponseHeaderTimeout: 0, // gRPC streams may wait for their first message indefinitely
		IdleConnTimeout:       90 * time.Second,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

// newH2Proxy forwards to an h2 backend with the standard library's reverse
// proxy, which handles what gRPC needs (trailers, full-duplex streams);
// the lean HTTP/1.1 path does not.
func newH2Proxy(be *backend, tr http.RoundTripper, log interface {
	Warn(string, ...any)
}) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:     tr,
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = be.pick().addr
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			if l, ok := pr.In.Context().Value(listenerKey{}).(*listener); ok {
				pr.Out.Header.Set("X-Forwarded-Port", l.port)
				pr.Out.Header.Set("X-Forwarded-Proto", l.scheme)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Warn("h2 backend request failed", "backend", be.name, "err", err)
			httpError(w, http.StatusBadGateway, "backend "+be.name+" failed")
		},
	}
}
