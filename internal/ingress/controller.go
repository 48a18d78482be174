package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// Controller watches the API, keeps the routing table current and serves
// the HTTP, HTTPS and health listeners.
type Controller struct {
	cfg         Config
	log         *slog.Logger
	table       atomic.Pointer[table]
	pools       *poolSet
	certs       *certCache
	defaultCert *tls.Certificate
	proxy       *proxy
	h2          *http.Transport
	ready       atomic.Bool

	httpLn, httpsLn, healthLn net.Listener

	// emitted are the problems already reported as events, so that a
	// resync does not repeat them.
	emitted map[string]bool
}

// New validates cfg, generates the default certificate and binds the
// listeners, so that a busy port fails here rather than in Run. Run must
// be called to serve and to release them.
func New(cfg Config) (*Controller, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cert, err := selfSignedCert()
	if err != nil {
		return nil, err
	}
	c := &Controller{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "ingress"),
		pools:       newPoolSet(cfg.DialTimeout, cfg.MaxIdlePerEndpoint),
		certs:       newCertCache(),
		defaultCert: cert,
		h2:          newH2Transport(cfg.DialTimeout),
		emitted:     map[string]bool{},
	}
	var lc net.ListenConfig
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("ingress: listen %s on %s: %w (is another ingress controller or web server using the port?)", name, addr, err)
		}
		return ln, nil
	}
	if c.httpLn, err = bind("HTTP", cfg.HTTPListen); err != nil {
		return nil, err
	}
	if c.httpsLn, err = bind("HTTPS", cfg.HTTPSListen); err != nil {
		c.httpLn.Close()
		return nil, err
	}
	if c.healthLn, err = bind("health", cfg.HealthListen); err != nil {
		c.httpLn.Close()
		c.httpsLn.Close()
		return nil, err
	}
	httpsPort := portOf(c.httpsLn.Addr())
	if httpsPort == "443" {
		httpsPort = ""
	}
	c.proxy = &proxy{table: &c.table, log: c.log, backendTimeout: cfg.BackendTimeout, httpsPort: httpsPort}
	return c, nil
}

// Addrs returns the bound HTTP, HTTPS and health addresses (useful when
// the configured ports were 0).
func (c *Controller) Addrs() (httpAddr, httpsAddr, healthAddr net.Addr) {
	return c.httpLn.Addr(), c.httpsLn.Addr(), c.healthLn.Addr()
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// Run serves until ctx is done, then shuts the listeners down gracefully
// (in-flight requests get up to 10s).
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recorder := c.cfg.Recorder
	if recorder == nil {
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Client.CoreV1().Events("")})
		defer b.Shutdown()
		recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "knet-ingress"})
	}

	httpStd := c.frontServer(&listener{proxy: c.proxy, scheme: "http", port: portOf(c.httpLn.Addr())})
	httpsL := &listener{proxy: c.proxy, tls: true, scheme: "https", port: portOf(c.httpsLn.Addr())}
	httpsStd := c.frontServer(httpsL)
	tlsConfig := func() *tls.Config {
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2", "http/1.1"},
			GetCertificate: c.certificate,
		}
	}
	// net/http gets its own copy: it configures HTTP/2 into it.
	httpsStd.TLSConfig = tlsConfig()
	fronts := []*front{
		newFront(httpStd.Handler.(*listener), httpStd, nil, c.httpLn.Addr()),
		newFront(httpsL, httpsStd, tlsConfig(), c.httpsLn.Addr()),
	}
	health := &http.Server{Handler: c.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("ingress %s server: %w", name, err)
			}
		}()
	}
	serve("HTTP", func() error { return fronts[0].serve(c.httpLn) })
	serve("HTTPS", func() error { return fronts[1].serve(c.httpsLn) })
	serve("health", func() error { return health.Serve(c.healthLn) })
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.watch(ctx, recorder); err != nil {
			errc <- err
		}
	}()
	c.log.Info("ingress controller running", "http", c.httpLn.Addr().String(), "https", c.httpsLn.Addr().String(),
		"health", c.healthLn.Addr().String(), "class", c.cfg.ClassName)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	var sw sync.WaitGroup
	for _, f := range fronts {
		sw.Add(1)
		go func() { defer sw.Done(); f.shutdown(shutdownCtx) }()
	}
	health.Shutdown(shutdownCtx)
	sw.Wait()
	wg.Wait()
	c.pools.closeAll()
	c.h2.CloseIdleConnections()
	return err
}

func (c *Controller) frontServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.cfg.ReadHeaderTimeout,
		IdleTimeout:       c.cfg.IdleTimeout,
		MaxHeaderBytes:    c.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
}

// certificate picks the certificate by SNI from the current table.
func (c *Controller) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if t := c.table.Load(); t != nil {
		if cert := t.certs.forSNI(hello.ServerName); cert != nil {
			return cert, nil
		}
	}
	return c.defaultCert, nil
}

func (c *Controller) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.ready.Load() {
			http.Error(w, "not synced with the Kubernetes API yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// slim drops what the controller never reads before objects enter the
// informer caches.
func slim(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// watch runs the informers and the sync loop: events only mark the state
// dirty; a sync rebuilds the table from the caches, at most every
// MinSyncInterval, retrying failed status writes with backoff.
func (c *Controller) watch(ctx context.Context, recorder record.EventRecorder) error {
	factory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0, informers.WithTransform(slim))
	secretFactory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0, informers.WithTransform(slim),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "type=" + string(corev1.SecretTypeTLS) }))
	ingInf := factory.Networking().V1().Ingresses()
	classInf := factory.Networking().V1().IngressClasses()
	svcInf := factory.Core().V1().Services()
	esInf := factory.Discovery().V1().EndpointSlices()
	secInf := secretFactory.Core().V1().Secrets()

	dirty := make(chan struct{}, 1)
	mark := func(any) {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: mark, UpdateFunc: func(_, o any) { mark(o) }, DeleteFunc: mark}
	for _, inf := range []cache.SharedIndexInformer{ingInf.Informer(), classInf.Informer(), svcInf.Informer(), esInf.Informer(), secInf.Informer()} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("ingress: watch the API: %w", err)
		}
	}
	factory.Start(ctx.Done())
	secretFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer secretFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), ingInf.Informer().HasSynced, classInf.Informer().HasSynced,
		svcInf.Informer().HasSynced, esInf.Informer().HasSynced, secInf.Informer().HasSynced) {
		return nil // ctx done
	}
	b := &builder{
		className:      c.cfg.ClassName,
		controllerName: c.cfg.ControllerName,
		pools:          c.pools,
		loadCert:       c.certs.load,
		h2Proxy:        func(be *backend) *httputil.ReverseProxy { return newH2Proxy(be, c.h2, c.log) },
	}
	const resync = 5 * time.Minute
	backoff := time.Duration(0)
	for {
		ings, _ := ingInf.Lister().List(labels.Everything())
		classes, _ := classInf.Lister().List(labels.Everything())
		svcs, _ := svcInf.Lister().List(labels.Everything())
		eps, _ := esInf.Lister().List(labels.Everything())
		secs, _ := secInf.Lister().List(labels.Everything())
		snap := newSnapshot(ings, classes, svcs, eps, secs)
		err := c.sync(ctx, b, snap, recorder)
		wait := resync
		if err != nil {
			backoff = min(max(2*backoff, time.Second), time.Minute)
			wait = backoff
			c.log.Warn("sync failed, will retry", "err", err, "retryIn", wait)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.MinSyncInterval):
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-dirty:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// sync swaps in a table built from snap, reports problems as events and
// publishes the address into served Ingresses' status.
func (c *Controller) sync(ctx context.Context, b *builder, snap snapshot, recorder record.EventRecorder) error {
	res := b.build(snap)
	c.table.Store(res.table)
	c.pools.retain(res.endpoints)
	c.certs.retain(snap.secrets)
	if !c.ready.Swap(true) {
		c.log.Info("synced with the Kubernetes API", "ingresses", len(res.served))
	}
	c.reportProblems(res.problems, recorder)
	return c.publishStatus(ctx, snap, res.served)
}

// reportProblems emits one Warning event per new problem; a problem that
// persists is not repeated on every resync.
func (c *Controller) reportProblems(problems []problem, recorder record.EventRecorder) {
	now := make(map[string]bool, len(problems))
	for _, p := range problems {
		key := string(p.ingress.UID) + "\x00" + p.reason + "\x00" + p.message
		now[key] = true
		if c.emitted[key] {
			continue
		}
		c.log.Warn("Ingress not fully served", "ingress", p.ingress.Namespace+"/"+p.ingress.Name, "reason", p.reason, "message", p.message)
		recorder.Event(p.ingress, corev1.EventTypeWarning, p.reason, p.message)
	}
	c.emitted = now
}

// publishStatus copies the publish Service's load-balancer addresses into
// every served Ingress whose status differs.
func (c *Controller) publishStatus(ctx context.Context, snap snapshot, served []*networkingv1.Ingress) error {
	if c.cfg.PublishService == "" {
		return nil
	}
	svc := snap.services[c.cfg.PublishService]
	if svc == nil {
		c.log.Debug("publish Service not found; Ingress status left as is", "service", c.cfg.PublishService)
		return nil
	}
	want := loadBalancerStatus(svc)
	var errs []error
	for _, ing := range served {
		if equality.Semantic.DeepEqual(ing.Status.LoadBalancer, want) {
			continue
		}
		up := ing.DeepCopy()
		up.Status.LoadBalancer = want
		if _, err := c.cfg.Client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, up, metav1.UpdateOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("update status of Ingress %s/%s: %w", ing.Namespace, ing.Name, err))
			continue
		}
		c.log.Info("published Ingress status", "ingress", ing.Namespace+"/"+ing.Name, "addresses", addresses(want))
	}
	return errors.Join(errs...)
}

// loadBalancerStatus converts a Service's load-balancer status into an
// Ingress's.
func loadBalancerStatus(svc *corev1.Service) networkingv1.IngressLoadBalancerStatus {
	var st networkingv1.IngressLoadBalancerStatus
	for _, in := range svc.Status.LoadBalancer.Ingress {
		out := networkingv1.IngressLoadBalancerIngress{IP: in.IP, Hostname: in.Hostname}
		for _, p := range in.Ports {
			out.Ports = append(out.Ports, networkingv1.IngressPortStatus{Port: p.Port, Protocol: p.Protocol, Error: p.Error})
		}
		st.Ingress = append(st.Ingress, out)
	}
	return st
}

func addresses(st networkingv1.IngressLoadBalancerStatus) string {
	var s []string
	for _, in := range st.Ingress {
		s = append(s, in.IP+in.Hostname)
	}
	return strings.Join(s, ",")
}
