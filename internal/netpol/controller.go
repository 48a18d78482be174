package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"knet/internal/syncloop"
)

// Controller keeps the node's NetworkPolicy table in sync with the API.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	nft      knftables.Interface
	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	nss      corelisters.NamespaceLister
	policies networkinglisters.NetworkPolicyLister
	loop     *syncloop.Loop
	synced   chan struct{}
	once     sync.Once
	syncs    atomic.Uint64
	failures atomic.Uint64

	applied *ruleset // owned by Run; nil: kernel state unknown, rebuild
}

// Stats are the controller's counters, for metrics and tests.
type Stats struct {
	// Syncs counts successful syncs (including ones that changed nothing),
	// SyncFailures failed applies (each followed by a retry with backoff).
	Syncs, SyncFailures uint64
}

// New validates cfg (after Defaults) and builds a Controller. It touches
// nothing until Run.
func New(cfg Config) (*Controller, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nft := cfg.NFT
	if nft == nil {
		var err error
		if nft, err = knftables.New(knftables.IPv4Family, TableName); err != nil {
			return nil, fmt.Errorf("netpol: nftables unavailable (needs the nft binary >= 1.0.1 and kernel nf_tables): %w", err)
		}
	}
	f := informers.NewSharedInformerFactory(cfg.Client, 0)
	c := &Controller{
		cfg: cfg, log: cfg.Logger.With("component", "netpol", "node", cfg.NodeName), nft: nft, factory: f,
		loop: syncloop.New(syncloop.Config{MinInterval: cfg.MinSyncInterval, Resync: cfg.SyncPeriod, RetryMin: cfg.RetryMin, RetryMax: cfg.RetryMax}), synced: make(chan struct{}),
	}
	mark := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.markDirty() },
		UpdateFunc: func(any, any) { c.markDirty() },
		DeleteFunc: func(any) { c.markDirty() },
	}
	// Pod status changes all the time; only what policy reads matters.
	podMark := mark
	podMark.UpdateFunc = func(o, n any) {
		op, ok1 := o.(*v1.Pod)
		np, ok2 := n.(*v1.Pod)
		if !ok1 || !ok2 || !reflect.DeepEqual(podView(op), podView(np)) {
			c.markDirty()
		}
	}
	pi, ni, npi := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Networking().V1().NetworkPolicies()
	for what, reg := range map[string]func() error{
		"Pods":            func() error { _, err := pi.Informer().AddEventHandler(podMark); return err },
		"Namespaces":      func() error { _, err := ni.Informer().AddEventHandler(mark); return err },
		"NetworkPolicies": func() error { _, err := npi.Informer().AddEventHandler(mark); return err },
	} {
		if err := reg(); err != nil {
			return nil, fmt.Errorf("netpol: watch %s: %w", what, err)
		}
	}
	c.pods, c.nss, c.policies = pi.Lister(), ni.Lister(), npi.Lister()
	return c, nil
}

// podView is what Compile reads from a Pod.
func podView(p *v1.Pod) any {
	ip, _ := podIPv4(p)
	var ports []v1.ContainerPort
	for _, c := range p.Spec.Containers {
		ports = append(ports, c.Ports...)
	}
	return struct {
		labels map[string]string
		ip     string
		node   string
		ports  []v1.ContainerPort
	}{p.Labels, ip.String(), p.Spec.NodeName, ports}
}

func (c *Controller) markDirty() { c.loop.Mark() }

// Synced is closed after the first successful sync.
func (c *Controller) Synced() <-chan struct{} { return c.synced }

// Stats returns the sync counters.
func (c *Controller) Stats() Stats {
	return Stats{Syncs: c.syncs.Load(), SyncFailures: c.failures.Load()}
}

// Run watches the API and keeps the table in sync until ctx ends. The table
// stays in place on return, so pods stay protected while the agent
// restarts. It returns an error only if the caches never sync.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("netpol: %v cache did not sync (is the API server reachable?): %w", typ, context.Cause(ctx))
		}
	}
	c.log.Info("caches synced, starting sync loop")
	c.loop.Run(ctx, func(ctx context.Context, why syncloop.Reason) error {
		if why == syncloop.Resync {
			c.applied = nil
		}
		return c.sync(ctx)
	}, func(err error, retryIn time.Duration) {
		c.failures.Add(1)
		c.applied = nil
		c.log.Error("sync failed; the previous rules stay in force, full rebuild scheduled", "err", err, "retryIn", retryIn, "failures", c.failures.Load())
	})
	return nil
}

// sync computes, renders and applies the desired state once.
func (c *Controller) sync(ctx context.Context) error {
	start := time.Now()
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list Pods: %w", err)
	}
	nss, err := c.nss.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list Namespaces: %w", err)
	}
	nps, err := c.policies.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list NetworkPolicies: %w", err)
	}
	st := Compile(Inputs{Policies: nps, Pods: pods, Namespaces: nss, NodeName: c.cfg.NodeName, AlwaysAllowed: c.cfg.alwaysAllowed()})
	next := render(st)
	tx := c.nft.NewTransaction()
	plan(tx, c.applied, next)
	if n := tx.NumOperations(); n > 0 {
		if err := c.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("apply nftables table %s (%d operations): %w", TableName, n, err)
		}
	}
	full := c.applied == nil
	c.applied = next
	c.syncs.Add(1)
	c.once.Do(func() { close(c.synced) })
	c.log.Debug("synced", "full", full, "policies", len(nps), "groups", len(st.Groups),
		"ingressPods", len(st.Ingress), "egressPods", len(st.Egress), "operations", tx.NumOperations(), "elapsed", time.Since(start))
	return nil
}
