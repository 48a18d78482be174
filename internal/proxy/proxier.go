package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"knet/internal/nftsession"
	"knet/internal/syncloop"
)

// staleChainGrace is how long a flushed per-Service chain waits before it is
// deleted (see plan).
const staleChainGrace = time.Second

// Proxier programs the node's Service proxy table from Services and
// EndpointSlices.
type Proxier struct {
	cfg         Config
	log         *slog.Logger
	nft         knftables.Interface
	session     *nftsession.Session // nil when cfg.NFT was given; closed by Run
	ct          Conntrack
	clusterCIDR netip.Prefix
	nodeIPs     []netip.Addr

	factories   []informers.SharedInformerFactory
	services    corelisters.ServiceLister
	slices      discoverylisters.EndpointSliceLister
	loop        *syncloop.Loop
	synced      chan struct{}
	syncedOnce  sync.Once
	health      *healthServers
	syncs       atomic.Uint64
	failures    atomic.Uint64
	lastSyncDur atomic.Int64
	// dirtySince is when the oldest change not yet synced arrived (unix
	// ns, 0 = none), so a sync can log how long a change waited for it.
	dirtySince atomic.Int64

	// Owned by the Run goroutine.
	applied     *ruleset // nil: kernel state unknown, next sync is full
	baseCreated bool
	prevState   *State
	memo        Memo
	stale       map[string]time.Time
	warned      map[types.NamespacedName]map[string]bool
}

// Stats are the proxier's counters, for metrics.
type Stats struct {
	// Syncs counts successful applies, SyncFailures failed ones (each is
	// followed by a full resync with backoff).
	Syncs, SyncFailures uint64
	LastSyncDuration    time.Duration
}

// New validates cfg (after Defaults) and builds a Proxier. It touches
// nothing until Run.
func New(cfg Config) (*Proxier, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cidr, _ := cfg.clusterCIDR()
	nft := cfg.NFT
	var session *nftsession.Session
	if nft == nil {
		inner, err := knftables.New(knftables.IPv4Family, TableName)
		if err == nil {
			// One long-lived nft process: a small change then costs a third of a
			// fresh nft run (see package nftsession).
			session, err = nftsession.New(inner)
		}
		if err != nil {
			return nil, fmt.Errorf("proxy: nftables unavailable (needs the nft binary >= 1.0.1 and kernel nf_tables): %w", err)
		}
		nft = session
	}
	ct := cfg.Conntrack
	if ct == nil {
		ct = NetlinkConntrack{}
	}
	// Services and slices another proxy implementation claims are not ours
	// (service.kubernetes.io/service-proxy-name); headless slices need no rules.
	svcFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "!" + labelProxyName }))
	sliceFactory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "!" + labelProxyName + ",!" + v1.IsHeadlessService }))
	p := &Proxier{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "proxy", "node", cfg.NodeName),
		nft:         nft,
		session:     session,
		ct:          ct,
		clusterCIDR: cidr,
		nodeIPs:     cfg.nodeAddrs(),
		factories:   []informers.SharedInformerFactory{svcFactory, sliceFactory},
		loop:        syncloop.New(syncloop.Config{MinInterval: cfg.MinSyncInterval, Resync: cfg.SyncPeriod, RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax}),
		synced:      make(chan struct{}),
		stale:       map[string]time.Time{},
		warned:      map[types.NamespacedName]map[string]bool{},
	}
	p.health = newHealthServers(cfg.HealthCheckBindIP, p.log)
	mark := func(kind string) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { p.markDirty(kind, "add", o) },
			UpdateFunc: func(_, o any) { p.markDirty(kind, "update", o) },
			DeleteFunc: func(o any) { p.markDirty(kind, "delete", o) },
		}
	}
	si := svcFactory.Core().V1().Services()
	ei := sliceFactory.Discovery().V1().EndpointSlices()
	svcHandler := mark("Service")
	svcHandler.AddFunc = p.serviceAdded
	if _, err := si.Informer().AddEventHandler(svcHandler); err != nil {
		return nil, fmt.Errorf("proxy: watch Services: %w", err)
	}
	if _, err := ei.Informer().AddEventHandler(mark("EndpointSlice")); err != nil {
		return nil, fmt.Errorf("proxy: watch EndpointSlices: %w", err)
	}
	p.services, p.slices = si.Lister(), ei.Lister()
	return p, nil
}

const labelProxyName = "service.kubernetes.io/service-proxy-name"

// markDirty asks for a sync. At debug level it logs the event, so a
// Service's programming latency can be followed from event to nft.
func (p *Proxier) markDirty(kind, op string, obj any) { p.markDirtyWithin(kind, op, obj, 0) }

// markDirtyWithin is markDirty for a change that may wait up to wait for a
// related one (0: sync at once).
func (p *Proxier) markDirtyWithin(kind, op string, obj any, wait time.Duration) {
	p.dirtySince.CompareAndSwap(0, time.Now().UnixNano())
	if wait > 0 {
		p.loop.MarkWithin(wait)
	} else {
		p.loop.Mark()
	}
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		key, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		p.log.Debug("event", "kind", kind, "op", op, "key", key, "wait", wait)
	}
}

// serviceAdded asks for a sync for a new Service. One that has no EndpointSlice yet would only
// get its no-endpoints reject rule, and its slice usually follows within milliseconds (the
// EndpointSlice controller creates it): the sync waits up to NewServiceWait for it, so the
// pair costs one sync instead of two and the endpoints' rules come one sync earlier.
func (p *Proxier) serviceAdded(obj any) {
	svc, ok := obj.(*v1.Service)
	if !ok || p.cfg.NewServiceWait <= 0 {
		p.markDirty("Service", "add", obj)
		return
	}
	sel := labels.SelectorFromSet(labels.Set{discovery.LabelServiceName: svc.Name})
	if have, err := p.slices.EndpointSlices(svc.Namespace).List(sel); err != nil || len(have) > 0 {
		p.markDirty("Service", "add", obj)
		return
	}
	p.markDirtyWithin("Service", "add", obj, p.cfg.NewServiceWait)
}

// Synced is closed after the first successful sync.
func (p *Proxier) Synced() <-chan struct{} { return p.synced }

// Stats returns the sync counters.
func (p *Proxier) Stats() Stats {
	return Stats{Syncs: p.syncs.Load(), SyncFailures: p.failures.Load(), LastSyncDuration: time.Duration(p.lastSyncDur.Load())}
}

// Run watches the API and keeps the table in sync until ctx ends. It leaves
// the table in place on return, so Service traffic keeps flowing while the
// proxy restarts; established connections survive because conntrack is
// never flushed. It returns an error only if the caches never sync.
func (p *Proxier) Run(ctx context.Context) error {
	defer p.health.close()
	if p.session != nil {
		defer p.session.Close()
	}
	for _, f := range p.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range p.factories {
			f.Shutdown()
		}
	}()
	for _, f := range p.factories {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("proxy: %v cache did not sync (is the API server reachable?): %w", typ, context.Cause(ctx))
			}
		}
	}
	p.log.Info("caches synced, starting sync loop")

	p.loop.Run(ctx, func(ctx context.Context, why syncloop.Reason) error {
		if why == syncloop.Resync {
			p.applied = nil // a full resync repairs edits made behind our back
		}
		return p.sync(ctx)
	}, func(err error, retryIn time.Duration) {
		p.failures.Add(1)
		p.applied = nil
		p.log.Error("sync failed; full resync scheduled", "err", err, "retryIn", retryIn, "failures", p.failures.Load())
	})
	return nil
}

// inputs snapshots the informer caches.
func (p *Proxier) inputs() (Inputs, error) {
	svcs, err := p.services.List(labels.Everything())
	if err != nil {
		return Inputs{}, fmt.Errorf("list Services: %w", err)
	}
	eps, err := p.slices.List(labels.Everything())
	if err != nil {
		return Inputs{}, fmt.Errorf("list EndpointSlices: %w", err)
	}
	return Inputs{
		Services:       svcs,
		EndpointSlices: eps,
		NodeName:       p.cfg.NodeName,
		Zone:           p.cfg.Zone,
		NodeIPs:        p.nodeIPs,
		ClusterCIDR:    p.clusterCIDR,
		MasqueradeMark: p.cfg.MasqueradeMark,
	}, nil
}

// sync computes, renders and applies the desired state once.
func (p *Proxier) sync(ctx context.Context) error {
	start := time.Now()
	// Changes that arrive from here on are read by this sync or mark the
	// next one.
	waited := time.Duration(0)
	if since := p.dirtySince.Swap(0); since != 0 {
		waited = start.Sub(time.Unix(0, since))
	}
	in, err := p.inputs()
	if err != nil {
		return err
	}
	st := ComputeWith(in, &p.memo)
	computed := time.Now()
	// Fragments of unchanged ServicePorts are reused from the applied
	// ruleset, so render and plan cost what changed.
	next := renderFrom(st, p.applied)

	p.deleteStaleChains(ctx, next, start)

	var existing map[string][]string
	if p.applied == nil {
		existing, err = p.nft.ListAll(ctx)
		if knftables.IsNotFound(err) {
			existing = map[string][]string{} // no table yet: nothing to flush
		} else if err != nil {
			// Not fatal: only leftovers from an older run stay behind.
			p.log.Warn("cannot list the existing table; stale chains may remain until the next full sync", "err", err)
		}
	}
	tx := p.nft.NewTransaction()
	stale := plan(tx, p.applied, next, existing, !p.baseCreated)
	planned := time.Now()
	if tx.NumOperations() > 0 {
		if err := p.nft.Run(ctx, tx); err != nil {
			p.health.healthy.Store(false)
			return fmt.Errorf("apply nftables table %s (%d operations): %w", TableName, tx.NumOperations(), err)
		}
	}
	applied := time.Now()
	full := p.applied == nil
	p.applied, p.baseCreated = next, true
	for _, c := range stale {
		p.stale[c] = start
	}
	p.health.healthy.Store(true)
	// Health checks follow the rules just applied at once, before the slower conntrack
	// cleanup: a load balancer that sees traffic served must also see the endpoint counted.
	problems := append(st.Problems, p.health.sync(st.HealthChecks)...)

	if p.prevState == nil || !udpFrontendsOf(p.prevState).equal(udpFrontendsOf(st)) {
		p.cleanupUDP(p.prevState, st)
	}
	p.prevState = st
	p.report(problems)

	dur := time.Since(start)
	p.syncs.Add(1)
	p.lastSyncDur.Store(int64(dur))
	p.syncedOnce.Do(func() { close(p.synced) })
	// waited: oldest change → sync start; compute: caches → desired state;
	// plan: render + diff (+ listing the table on a full sync); nft: the
	// transaction; after: health checks, UDP conntrack cleanup, events.
	p.log.Debug("synced", "full", full, "servicePorts", len(st.ServicePorts), "operations", tx.NumOperations(),
		"waited", waited, "compute", computed.Sub(start), "plan", planned.Sub(computed), "nft", applied.Sub(planned),
		"after", time.Since(applied), "elapsed", dur)
	return nil
}

// deleteStaleChains deletes chains flushed at least staleChainGrace ago
// that are still unwanted, in their own transaction so a failure cannot
// block the main sync.
func (p *Proxier) deleteStaleChains(ctx context.Context, next *ruleset, now time.Time) {
	tx := p.nft.NewTransaction()
	for c, since := range p.stale {
		if next.hasChain(c) {
			delete(p.stale, c)
			continue
		}
		if now.Sub(since) >= staleChainGrace {
			tx.Delete(&knftables.Chain{Name: c})
			delete(p.stale, c)
		}
	}
	if tx.NumOperations() == 0 {
		return
	}
	if err := p.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		// The next full sync lists and flushes them again.
		p.log.Warn("cannot delete stale chains; retrying after a full resync", "err", err)
		p.applied = nil
	}
}

func (p *Proxier) cleanupUDP(prev, next *State) {
	filter := newStaleUDPFilter(prev, next)
	if len(filter.frontends) == 0 {
		return
	}
	n, err := p.ct.DeleteUDP(filter)
	if err != nil {
		p.log.Error("cannot delete stale UDP conntrack entries; UDP clients of changed Services may stay pinned to old endpoints", "err", err)
		return
	}
	if n > 0 {
		p.log.Info("deleted stale UDP conntrack entries", "count", n)
	}
}

// report emits one Warning Event per new problem; a problem that persists
// is not repeated every sync.
func (p *Proxier) report(problems []Problem) {
	seen := map[types.NamespacedName]map[string]bool{}
	for _, pr := range problems {
		msg := pr.Reason + ": " + pr.Message
		if seen[pr.Service] == nil {
			seen[pr.Service] = map[string]bool{}
		}
		seen[pr.Service][msg] = true
		if p.warned[pr.Service][msg] {
			continue
		}
		p.log.Warn("Service not fully programmed", "service", pr.Service.String(), "reason", pr.Reason, "message", pr.Message)
		svc, err := p.services.Services(pr.Service.Namespace).Get(pr.Service.Name)
		if err != nil {
			continue
		}
		p.cfg.Recorder.Eventf(svc, v1.EventTypeWarning, pr.Reason, "knet proxy on node %s: %s", p.cfg.NodeName, pr.Message)
	}
	p.warned = seen
}
