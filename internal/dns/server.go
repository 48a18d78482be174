package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Server is the cluster DNS server. Create it with New and start it with Run.
type Server struct {
	cfg   Config
	zone  string // lowercase FQDN
	log   *slog.Logger
	snap  atomic.Pointer[snapshot]
	gens  atomic.Uint64
	wire  *wireCache
	fwd   *forwarder // nil without upstreams
	ready atomic.Bool
}

// New checks cfg and returns a Server that answers from an empty view until
// Run has synced with the API.
func New(cfg Config) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:  cfg,
		zone: strings.ToLower(strings.TrimSuffix(cfg.ClusterDomain, ".")) + ".",
		log:  cfg.Logger.With("component", "dns"),
		wire: newWireCache(cfg.CacheSize),
	}
	if len(cfg.Upstreams) > 0 {
		s.fwd = newForwarder(cfg.Upstreams, newMsgCache(cfg.CacheSize, time.Now))
	}
	return s, nil
}

// Run serves DNS and health until ctx is done. Listening errors are returned
// at once; after that Run returns nil when ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	udp, tcp, err := s.listen(ctx)
	if err != nil {
		return err
	}
	healthLn, err := net.Listen("tcp", s.cfg.HealthListen)
	if err != nil {
		closeAll(udp, tcp)
		return fmt.Errorf("dns: listen for health on %s: %w (pick a free port with the health listen flag)", s.cfg.HealthListen, err)
	}
	s.log.Info("serving DNS", "zone", s.zone, "udp", udp[0].LocalAddr().String(), "udpSockets", len(udp),
		"tcp", tcp.Addr().String(), "health", healthLn.Addr().String(), "upstreams", s.cfg.Upstreams)

	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}

	health := &http.Server{Handler: s.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
	run(func() {
		if err := health.Serve(healthLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("health server stopped", "err", err)
		}
	})
	run(func() { s.watch(ctx) })

	jobs := make(chan udpJob, 4*s.cfg.ForwardWorkers)
	for range s.cfg.ForwardWorkers {
		run(func() { s.forwardWorker(ctx, jobs) })
	}
	for _, c := range udp {
		run(func() { s.serveUDP(c, jobs) })
	}
	run(func() { s.serveTCP(ctx, tcp) })

	<-ctx.Done()
	s.ready.Store(false)
	closeAll(udp, tcp)
	shutdownCtx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	_ = health.Shutdown(shutdownCtx)
	stop()
	wg.Wait()
	return nil
}

func closeAll(udp []*net.UDPConn, tcp net.Listener) {
	for _, c := range udp {
		_ = c.Close()
	}
	if tcp != nil {
		_ = tcp.Close()
	}
}

// listen binds the UDP sockets (SO_REUSEPORT, so the kernel spreads queries
// over one reader each) and the TCP listener, all on the same port.
func (s *Server) listen(ctx context.Context) ([]*net.UDPConn, net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	n := s.cfg.UDPSockets
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	addr := s.cfg.Listen
	var udp []*net.UDPConn
	for i := range n {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			closeAll(udp, nil)
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w (is another DNS server on that port? binding :53 needs root or CAP_NET_BIND_SERVICE)", addr, err)
		}
		c := pc.(*net.UDPConn)
		// A deep receive queue absorbs bursts instead of dropping them.
		_ = c.SetReadBuffer(4 << 20)
		udp = append(udp, c)
		if i == 0 {
			// With port 0 the first socket picks the port; the others and
			// TCP join it.
			host, _, _ := net.SplitHostPort(addr)
			_, port, _ := net.SplitHostPort(c.LocalAddr().String())
			addr = net.JoinHostPort(host, port)
		}
	}
	tcp, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		closeAll(udp, nil)
		return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", addr, err)
	}
	return udp, tcp, nil
}

type udpJob struct {
	conn *net.UDPConn
	addr net.Addr
	req  []byte
}

// serveUDP is one socket's reader. It answers inline everything that needs
// no upstream round trip (cluster names, cached answers), which keeps the
// number of goroutines fixed under a flood; upstream lookups go to the
// bounded forward workers.
func (s *Server) serveUDP(c *net.UDPConn, jobs chan<- udpJob) {
	buf := make([]byte, dns64k)
	out := make([]byte, 0, 4096)
	for {
		n, addr, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		resp, err := s.serveWire(buf[:n], out, true, false)
		switch {
		case errors.Is(err, errWouldBlock):
			select {
			case jobs <- udpJob{conn: c, addr: net.UDPAddrFromAddrPort(addr), req: append([]byte(nil), buf[:n]...)}:
			default:
				// Every worker is busy and the queue is full: drop, the
				// client retries (CoreDNS's forward answers REFUSED past
				// max_concurrent; a drop is gentler on a flood).
			}
			continue
		case err != nil:
			continue
		}
		_, _ = c.WriteToUDPAddrPort(resp, addr)
		if cap(resp) > cap(out) {
			out = resp[:0]
		}
	}
}

const dns64k = 65535

func (s *Server) forwardWorker(ctx context.Context, jobs <-chan udpJob) {
	out := make([]byte, 0, 4096)
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-jobs:
			resp, err := s.serveWire(j.req, out, true, true)
			if err != nil {
				continue
			}
			_, _ = j.conn.WriteTo(resp, j.addr)
		}
	}
}

// tcpIdleTimeout closes idle connections, as miekg/dns's server does (8 s).
const tcpIdleTimeout = 8 * time.Second

func (s *Server) serveTCP(ctx context.Context, ln net.Listener) {
	sem := make(chan struct{}, s.cfg.MaxTCPConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := ln.Accept()
		if err != nil {
			<-sem
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			stop := context.AfterFunc(ctx, func() { _ = c.Close() })
			defer stop()
			defer c.Close()
			s.serveTCPConn(c)
		}()
	}
}

func (s *Server) serveTCPConn(c net.Conn) {
	var lenBuf [2]byte
	buf := make([]byte, dns64k)
	out := make([]byte, 2, 4096)
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp, err := s.serveWire(buf[:n], out[2:2], false, true)
		if err != nil {
			continue
		}
		// resp may live in a new buffer: frame it in out.
		out = append(out[:0], byte(len(resp)>>8), byte(len(resp)))
		out = append(out, resp...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not synced with the Kubernetes API yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// watch keeps the snapshot in step with the API. Informer events only
// record which objects changed (see updater); one update at a time, at most
// every minUpdateInterval, recomputes those from the informer caches and
// publishes a new snapshot if any answer changed. Namespaces are watched
// because CoreDNS answers NXDOMAIN for names in a namespace that does not
// exist; Pods are not (pod names are answered from the IP in the name, as
// CoreDNS's `pods insecure`).
func (s *Server) watch(ctx context.Context) {
	u := newUpdater(s.zone, s.cfg.TTL)
	informer := func(lw cache.ListerWatcher, obj k8sruntime.Object) cache.SharedIndexInformer {
		inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
		_ = inf.SetTransform(slimObject) // fails only once started
		return inf
	}
	nsInf := informer(s.cfg.Source.Namespaces, &v1.Namespace{})
	svcInf := informer(s.cfg.Source.Services, &v1.Service{})
	esInf := informer(s.cfg.Source.EndpointSlices, &discoveryv1.EndpointSlice{})
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range []struct {
		what string
		inf  cache.SharedIndexInformer
		h    cache.ResourceEventHandler
	}{
		{"Namespaces", nsInf, u.namespaceHandler()},
		{"Services", svcInf, u.serviceHandler()},
		{"EndpointSlices", esInf, u.endpointSliceHandler()},
	} {
		if _, err := inf.inf.AddEventHandler(inf.h); err != nil {
			s.log.Error("watch "+inf.what, "err", err)
			return
		}
		wg.Add(1)
		go func() { defer wg.Done(); inf.inf.RunWithContext(ctx) }()
	}
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.HasSynced, svcInf.HasSynced, esInf.HasSynced) {
		return
	}
	c := caches{namespaces: nsInf.GetStore(), services: svcInf.GetStore(), endpointSlices: esInf.GetStore()}
	for {
		start := time.Now()
		changed, err := u.apply(c)
		if err != nil {
			s.log.Error("update DNS view, retrying", "err", err)
		}
		if changed || s.snap.Load() == nil {
			snap := u.snapshot(s.gens.Add(1), uint32(time.Now().Unix()))
			s.snap.Store(snap)
			s.log.Debug("updated DNS view", "gen", snap.gen, "took", time.Since(start))
		}
		if !s.ready.Swap(true) {
			snap := s.snap.Load()
			s.log.Info("synced with the Kubernetes API", "namespaces", snap.namespaces.len(), "services", snap.services.len(), "addresses", snap.reverse.len())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(minUpdateInterval):
		}
		select {
		case <-ctx.Done():
			return
		case <-u.pending:
		}
	}
}

// minUpdateInterval coalesces bursts of API events (a rollout touches many
// EndpointSlices) into one update.
const minUpdateInterval = 100 * time.Millisecond

// slimObject replaces each object by a new one holding only the fields DNS
// reads, before it enters the informer cache: managedFields, annotations,
// labels, status and most of the spec are most of this server's memory in a
// big cluster, and a fresh object lets the decoded one be freed whole.
// ResourceVersion stays: the informer's store and watch resume use it.
func slimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Namespace:
		return &v1.Namespace{ObjectMeta: slimMeta(&o.ObjectMeta, nil)}, nil
	case *v1.Service:
		spec := v1.ServiceSpec{
			Type:         o.Spec.Type,
			ClusterIP:    o.Spec.ClusterIP,
			ClusterIPs:   o.Spec.ClusterIPs,
			ExternalName: o.Spec.ExternalName,
		}
		if len(o.Spec.Ports) > 0 {
			spec.Ports = make([]v1.ServicePort, len(o.Spec.Ports))
			for i, p := range o.Spec.Ports {
				spec.Ports[i] = v1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port}
			}
		}
		return &v1.Service{ObjectMeta: slimMeta(&o.ObjectMeta, nil), Spec: spec}, nil
	case *discoveryv1.EndpointSlice:
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  slimMeta(&o.ObjectMeta, map[string]string{serviceNameLabel: o.Labels[serviceNameLabel]}),
			AddressType: o.AddressType,
			Ports:       o.Ports,
		}
		if len(o.Endpoints) > 0 {
			es.Endpoints = make([]discoveryv1.Endpoint, len(o.Endpoints))
			for i, e := range o.Endpoints {
				es.Endpoints[i] = discoveryv1.Endpoint{
					Addresses:  e.Addresses,
					Hostname:   e.Hostname,
					Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready},
				}
			}
		}
		return es, nil
	}
	return obj, nil
}

func slimMeta(m *metav1.ObjectMeta, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, Labels: labels}
}
