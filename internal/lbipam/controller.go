package lbipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"knet/internal/syncloop"
)

// ControllerConfig configures the allocation Controller. Call Defaults,
// then Validate (NewController does both).
type ControllerConfig struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// APIExtensions installs the IPAddressPool CRD when it is missing. nil:
	// the CRD must already exist, or Run waits for it.
	APIExtensions apiextensionsclient.Interface
	// DefaultPool is the built-in pool "default": CIDRs or a.b.c.d-e.f.g.h
	// ranges (knet up: 172.18.255.192/26). Its .0/.255 addresses are never
	// handed out. Empty: only IPAddressPools.
	DefaultPool []string
	// LeaderElection, when set, makes Run allocate only while it holds a
	// coordination Lease, so several replicas can run. nil (knet up, one
	// daemon): allocate at once.
	LeaderElection *LeaderElection
	// MinSyncInterval coalesces bursts of events. Default 100ms.
	MinSyncInterval time.Duration
	// ResyncPeriod forces a sync even without events. Default 5m.
	ResyncPeriod time.Duration
	// RetryMin and RetryMax bound the backoff after a failed sync.
	// Defaults 500ms and 30s.
	RetryMin, RetryMax time.Duration
	Recorder           record.EventRecorder
	Logger             *slog.Logger
}

// LeaderElection names the Lease that elects the active Controller.
type LeaderElection struct {
	Namespace, Name string // default kube-system, knet-lbipam
	Identity        string // required: unique per replica, e.g. the pod name
	// Defaults 15s, 10s, 2s (kube-controller-manager's).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Defaults fills unset optional fields.
func (c *ControllerConfig) Defaults() {
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 100 * time.Millisecond
	}
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = 5 * time.Minute
	}
	if c.RetryMin == 0 {
		c.RetryMin = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Recorder == nil {
		c.Recorder = &record.FakeRecorder{} // no channel: discards events
	}
	if le := c.LeaderElection; le != nil {
		if le.Namespace == "" {
			le.Namespace = metav1.NamespaceSystem
		}
		if le.Name == "" {
			le.Name = "knet-lbipam"
		}
		if le.LeaseDuration == 0 {
			le.LeaseDuration = 15 * time.Second
		}
		if le.RenewDeadline == 0 {
			le.RenewDeadline = 10 * time.Second
		}
		if le.RetryPeriod == 0 {
			le.RetryPeriod = 2 * time.Second
		}
	}
}

// Validate reports every problem with the configuration at once.
func (c *ControllerConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("lbipam: Client is required"))
	}
	if c.Dynamic == nil {
		errs = append(errs, errors.New("lbipam: Dynamic is required (IPAddressPools are read with the dynamic client)"))
	}
	if len(c.DefaultPool) > 0 {
		if _, err := parseAddresses(c.DefaultPool); err != nil {
			errs = append(errs, fmt.Errorf("lbipam: DefaultPool: %w", err))
		}
	}
	if c.MinSyncInterval < 0 || c.ResyncPeriod <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("lbipam: intervals must be positive and RetryMax >= RetryMin (call Defaults first)"))
	}
	if le := c.LeaderElection; le != nil {
		if le.Identity == "" {
			errs = append(errs, errors.New("lbipam: LeaderElection.Identity is required (unique per replica, e.g. the pod name)"))
		}
		if le.LeaseDuration <= le.RenewDeadline || le.RenewDeadline <= le.RetryPeriod || le.RetryPeriod <= 0 {
			errs = append(errs, errors.New("lbipam: LeaderElection needs LeaseDuration > RenewDeadline > RetryPeriod > 0"))
		}
	}
	return errors.Join(errs...)
}

// Controller allocates LoadBalancer addresses and writes them to
// status.loadBalancer.ingress.
type Controller struct {
	cfg ControllerConfig
	log *slog.Logger

	kubeInformers informers.SharedInformerFactory
	poolInformers dynamicinformer.DynamicSharedInformerFactory
	services      corelisters.ServiceLister
	namespaces    corelisters.NamespaceLister
	pools         cache.GenericLister
	loop          *syncloop.Loop

	// Owned by the Run goroutine: problems already reported, so a
	// persisting one is not repeated every sync.
	warned map[string]bool
	// Owned by the Run goroutine: Services whose status this controller
	// wrote and whose informer copy does not show that write yet. A sync
	// reads these instead of the cache, so it never allocates again for a
	// Service it has just served (and, with a new pool, moves it).
	written map[types.NamespacedName]*v1.Service
}

// NewController validates cfg (after Defaults) and builds a Controller. It
// touches nothing until Run.
func NewController(cfg ControllerConfig) (*Controller, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Controller{
		cfg:           cfg,
		log:           cfg.Logger.With("component", "lbipam-controller"),
		kubeInformers: informers.NewSharedInformerFactory(cfg.Client, 0),
		poolInformers: dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0),
		loop:          syncloop.New(syncloop.Config{MinInterval: cfg.MinSyncInterval, Resync: cfg.ResyncPeriod, RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax}),
		warned:        map[string]bool{},
		written:       map[types.NamespacedName]*v1.Service{},
	}
	mark := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.markDirty() },
		UpdateFunc: func(any, any) { c.markDirty() },
		DeleteFunc: func(any) { c.markDirty() },
	}
	si := c.kubeInformers.Core().V1().Services()
	ni := c.kubeInformers.Core().V1().Namespaces()
	pi := c.poolInformers.ForResource(PoolResource)
	for what, inf := range map[string]cache.SharedIndexInformer{"Services": si.Informer(), "Namespaces": ni.Informer(), "IPAddressPools": pi.Informer()} {
		if _, err := inf.AddEventHandler(mark); err != nil {
			return nil, fmt.Errorf("lbipam: watch %s: %w", what, err)
		}
	}
	c.services, c.namespaces, c.pools = si.Lister(), ni.Lister(), pi.Lister()
	return c, nil
}

func (c *Controller) markDirty() { c.loop.Mark() }

// Run installs the CRD if needed, then keeps Service addresses in sync
// until ctx ends (with LeaderElection: while it leads; losing the lease
// returns an error so the process restarts clean).
func (c *Controller) Run(ctx context.Context) error {
	le := c.cfg.LeaderElection
	if le == nil {
		return c.run(ctx)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     c.cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	var runErr error
	lost := false
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				c.log.Info("became leader", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
				runErr = c.run(ctx)
			},
			OnStoppedLeading: func() { lost = ctx.Err() == nil },
		},
	})
	if err != nil {
		return fmt.Errorf("lbipam: leader election: %w", err)
	}
	elector.Run(ctx)
	if runErr != nil {
		return runErr
	}
	if lost {
		return fmt.Errorf("lbipam: lost the lease %s/%s; restart to compete again", le.Namespace, le.Name)
	}
	return nil
}

func (c *Controller) run(ctx context.Context) error {
	if c.cfg.APIExtensions != nil {
		if err := ensureCRD(ctx, c.cfg.APIExtensions, c.cfg.Dynamic); err != nil {
			return fmt.Errorf("lbipam: %w", err)
		}
	}
	c.kubeInformers.Start(ctx.Done())
	c.poolInformers.Start(ctx.Done())
	defer c.kubeInformers.Shutdown()
	defer c.poolInformers.Shutdown()
	for typ, ok := range c.kubeInformers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("lbipam: %v cache did not sync (is the API server reachable?): %w", typ, context.Cause(ctx))
		}
	}
	for gvr, ok := range c.poolInformers.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("lbipam: %v cache did not sync (is the IPAddressPool CRD installed?): %w", gvr, context.Cause(ctx))
		}
	}
	c.log.Info("caches synced, allocating", "defaultPool", c.cfg.DefaultPool)

	c.loop.Run(ctx, func(ctx context.Context, _ syncloop.Reason) error { return c.sync(ctx) },
		func(err error, retryIn time.Duration) {
			c.log.Error("sync failed; retrying", "err", err, "retryIn", retryIn)
		})
	return nil
}

// inputs snapshots the caches into Allocate's inputs, and the pool objects
// by name for Events.
func (c *Controller) inputs() (Inputs, []PoolProblem, map[string]*unstructured.Unstructured, error) {
	objs, err := c.pools.List(labels.Everything())
	if err != nil {
		return Inputs{}, nil, nil, fmt.Errorf("list IPAddressPools: %w", err)
	}
	var srcs []PoolSource
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		byName[u.GetName()] = u
		srcs = append(srcs, PoolSourceFromUnstructured(u))
	}
	pools, problems, err := BuildPools(c.cfg.DefaultPool, srcs)
	if err != nil {
		return Inputs{}, nil, nil, err // validated in NewController: unreachable
	}
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return Inputs{}, nil, nil, fmt.Errorf("list Services: %w", err)
	}
	svcs = c.withWrites(svcs)
	nss, err := c.namespaces.List(labels.Everything())
	if err != nil {
		return Inputs{}, nil, nil, fmt.Errorf("list Namespaces: %w", err)
	}
	nsLabels := make(map[string]map[string]string, len(nss))
	for _, ns := range nss {
		nsLabels[ns.Name] = ns.Labels
	}
	return Inputs{Pools: pools, Services: svcs, NamespaceLabels: nsLabels}, problems, byName, nil
}

// sync allocates once and writes every status that differs.
func (c *Controller) sync(ctx context.Context) error {
	in, poolProblems, poolObjs, err := c.inputs()
	if err != nil {
		return err
	}
	res := Allocate(in)
	var errs []error
	keys := make([]types.NamespacedName, 0, len(res.Desired))
	for k := range res.Desired {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, k := range keys {
		if err := c.apply(ctx, k, res.Desired[k]); err != nil {
			errs = append(errs, err)
		}
	}
	c.report(res.Problems, poolProblems, poolObjs)
	return errors.Join(errs...)
}

// withWrites replaces the cached Services whose latest status write the
// informer has not delivered yet by the written object, and forgets writes
// the cache has caught up with (same resourceVersion or the same ingress) or
// whose Service is gone or was recreated.
func (c *Controller) withWrites(svcs []*v1.Service) []*v1.Service {
	if len(c.written) == 0 {
		return svcs
	}
	seen := make(map[types.NamespacedName]bool, len(c.written))
	out := slices.Clone(svcs)
	for i, svc := range out {
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		w, ok := c.written[key]
		if !ok {
			continue
		}
		seen[key] = true
		if w.UID != svc.UID || w.ResourceVersion == svc.ResourceVersion ||
			slices.Equal(ingressIPs(w), ingressIPs(svc)) {
			delete(c.written, key)
			continue
		}
		out[i] = w
	}
	for key := range c.written {
		if !seen[key] {
			delete(c.written, key)
		}
	}
	return out
}

// apply writes one Service's status if it differs from want.
func (c *Controller) apply(ctx context.Context, key types.NamespacedName, want Allocation) error {
	svc, err := c.services.Services(key.Namespace).Get(key.Name)
	if err != nil {
		return nil // deleted since the snapshot: nothing to write
	}
	if w := c.written[key]; w != nil && w.UID == svc.UID {
		svc = w // the cache has not seen our last write yet
	}
	cur := ingressIPs(svc)
	if (!want.IP.IsValid() && len(svc.Status.LoadBalancer.Ingress) == 0) ||
		(want.IP.IsValid() && len(svc.Status.LoadBalancer.Ingress) == 1 && len(cur) == 1 && cur[0] == want.IP) {
		return nil
	}
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = nil
	if want.IP.IsValid() {
		vip := v1.LoadBalancerIPModeVIP
		upd.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: want.IP.String(), IPMode: &vip}}
	}
	got, err := c.cfg.Client.CoreV1().Services(key.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update status of Service %s: %w", key, err)
	}
	c.written[key] = got
	if want.IP.IsValid() {
		c.log.Info("assigned LoadBalancer address", "service", key.String(), "ip", want.IP, "pool", want.Pool, "previous", cur)
		c.cfg.Recorder.Eventf(svc, v1.EventTypeNormal, "IPAllocated", "Assigned IP %s from pool %q", want.IP, want.Pool)
	} else {
		c.log.Info("released LoadBalancer address", "service", key.String(), "previous", cur)
		c.cfg.Recorder.Eventf(svc, v1.EventTypeNormal, "IPReleased", "Released IP %s", joinAddrs(cur))
	}
	return nil
}

func joinAddrs(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ","
		}
		s += a.String()
	}
	return s
}

// report emits one Warning Event per new problem, on the Service or on the
// IPAddressPool object.
func (c *Controller) report(svcProblems []Problem, poolProblems []PoolProblem, poolObjs map[string]*unstructured.Unstructured) {
	seen := map[string]bool{}
	for _, p := range svcProblems {
		id := "svc/" + p.Service.String() + "/" + p.Reason + "/" + p.Message
		seen[id] = true
		if c.warned[id] {
			continue
		}
		c.log.Warn("LoadBalancer Service has no address", "service", p.Service.String(), "reason", p.Reason, "message", p.Message)
		if svc, err := c.services.Services(p.Service.Namespace).Get(p.Service.Name); err == nil {
			c.cfg.Recorder.Event(svc, v1.EventTypeWarning, p.Reason, p.Message)
		}
	}
	for _, p := range poolProblems {
		id := "pool/" + p.Pool + "/" + p.Message
		seen[id] = true
		if c.warned[id] {
			continue
		}
		c.log.Warn("IPAddressPool ignored", "pool", p.Pool, "message", p.Message)
		if obj := poolObjs[p.Pool]; obj != nil {
			c.cfg.Recorder.Event(obj, v1.EventTypeWarning, "InvalidPool", p.Message)
		}
	}
	c.warned = seen
}
