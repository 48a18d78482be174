// Package podnet routes pod traffic between nodes: in the network namespace
// it runs in, it keeps a route to every other node's podCIDR, either directly
// via that node's InternalIP (host-gw) or through a VXLAN overlay.
//
// It owns the routes in the main table tagged with protocol RouteProtocol
// (0x4b), the VXLAN device "knet.vxlan" with its permanent ARP and FDB
// entries, and the Node annotation knet.dev/vtep-mac on its own Node. It never
// touches other routes, the bridge and veths (internal/cni), or nftables; pod
// traffic is routed, never NATed.
package podnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

const (
	// RouteProtocol tags every route podnet installs ("proto 75" in `ip route`),
	// so stale ones are recognisable and removable after a restart.
	RouteProtocol = 0x4b
	// VXLANDevice is the overlay device in VXLAN mode.
	VXLANDevice = "knet.vxlan"
	// VXLANVNI and VXLANPort are the overlay's VNI and UDP port (Linux/flannel's 8472).
	VXLANVNI  = 1
	VXLANPort = 8472
	// VTEPMACAnnotation carries a node's VXLAN device MAC for its peers.
	VTEPMACAnnotation = "knet.dev/vtep-mac"
)

// Mode selects how pod traffic crosses nodes.
type Mode string

const (
	// ModeHostGW routes each podCIDR via the owning node's InternalIP; nodes
	// must share an L2 segment.
	ModeHostGW Mode = "host-gw"
	// ModeVXLAN encapsulates pod traffic in VXLAN between node IPs; pod MTU
	// must be 50 bytes below the underlay's (1450 on a 1500 underlay).
	ModeVXLAN Mode = "vxlan"
)

// Config configures a Controller.
type Config struct {
	Client kubernetes.Interface
	// NodeName is the Node this controller serves; "" means it runs on the
	// host of `knet up` and routes every node's podCIDR.
	NodeName string
	// Mode is host-gw (default) or vxlan.
	Mode Mode
	// Link is the underlay device: "eth0" in a node, the underlay bridge on the host.
	Link string
	// ResyncPeriod forces a full sync even without events. Default 1m.
	ResyncPeriod time.Duration
	// MinSyncInterval rate-limits syncs after bursts of events. Default 100ms.
	MinSyncInterval time.Duration
	// MaxBackoff caps the retry delay after a failed sync. Default 30s.
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.Mode == "" {
		c.Mode = ModeHostGW
	}
	if c.ResyncPeriod == 0 {
		c.ResyncPeriod = time.Minute
	}
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports configs that cannot work.
func (c *Config) Validate() error {
	if c.Client == nil {
		return errors.New("podnet: Client is nil")
	}
	if c.Mode != ModeHostGW && c.Mode != ModeVXLAN {
		return fmt.Errorf("podnet: mode %q is not %q or %q", c.Mode, ModeHostGW, ModeVXLAN)
	}
	if c.Link == "" {
		return errors.New("podnet: Link is empty: set the underlay device (eth0 in a node, the underlay bridge on the host)")
	}
	return nil
}

// Controller keeps the routes of one network namespace in line with the Nodes.
type Controller struct {
	cfg   Config
	dp    Dataplane
	log   *slog.Logger
	dirty chan struct{}
	nodes listersv1.NodeLister
}

// New binds a Controller to the calling thread's current network namespace
// (call it from inside the node's namespace); Run may then run on any goroutine.
func New(cfg Config) (*Controller, error) {
	dp, err := newNetlinkDataplane()
	if err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	return newController(cfg, dp)
}

func newController(cfg Config, dp Dataplane) (*Controller, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Controller{
		cfg:   cfg,
		dp:    dp,
		log:   cfg.Logger.With("controller", "podnet", "node", cfg.NodeName, "mode", cfg.Mode),
		dirty: make(chan struct{}, 1),
	}, nil
}

func (c *Controller) markDirty() {
	select {
	case c.dirty <- struct{}{}:
	default:
	}
}

// relevantChange ignores Node status heartbeats: only addresses, podCIDRs and
// the VTEP annotation affect routes.
func relevantChange(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return !reflect.DeepEqual(nodeInfoFrom(o), nodeInfoFrom(n))
}

// Run watches Nodes and syncs until ctx ends. In VXLAN mode it also
// publishes this node's VTEP MAC. Routes are left in place on return (use
// Cleanup to remove them), so a restart does not interrupt pod traffic.
func (c *Controller) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(c.cfg.Client, 0)
	inf := factory.Core().V1().Nodes()
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.markDirty() },
		UpdateFunc: func(o, n any) {
			if relevantChange(o, n) {
				c.markDirty()
			}
		},
		DeleteFunc: func(any) { c.markDirty() },
	})
	if err != nil {
		return fmt.Errorf("podnet: add node handler: %w", err)
	}
	c.nodes = inf.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	c.log.Info("podnet controller started", "link", c.cfg.Link)

	resync := time.NewTicker(c.cfg.ResyncPeriod)
	defer resync.Stop()
	backoff := time.Duration(0)
	var retry <-chan time.Time
	c.markDirty()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.dirty:
		case <-resync.C:
		case <-retry:
		}
		retry = nil
		if err := c.sync(ctx); err != nil {
			backoff = min(max(2*backoff, time.Second), c.cfg.MaxBackoff)
			c.log.Error("podnet sync failed; retrying", "err", err, "retryIn", backoff)
			retry = time.After(backoff)
		} else {
			backoff = 0
		}
		// Rate limit: coalesce events arriving during the pause into one sync.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.cfg.MinSyncInterval):
		}
	}
}

// sync computes the desired state from the lister and applies it.
func (c *Controller) sync(ctx context.Context) error {
	list, err := c.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	infos := make([]nodeInfo, 0, len(list))
	for _, n := range list {
		infos = append(infos, nodeInfoFrom(n))
	}
	return c.syncNodes(ctx, infos)
}

func (c *Controller) syncNodes(ctx context.Context, nodes []nodeInfo) error {
	start := time.Now()
	vxlanDev := ""
	if c.cfg.Mode == ModeVXLAN && c.cfg.NodeName != "" {
		if err := c.ensureVXLAN(ctx, nodes); err != nil {
			return err
		}
		vxlanDev = VXLANDevice
	} else if c.cfg.NodeName != "" {
		// After a switch from vxlan to host-gw the device must go.
		if err := c.dp.DeleteLink(VXLANDevice); err != nil {
			return fmt.Errorf("remove %s: %w", VXLANDevice, err)
		}
	}
	want := desiredState(c.cfg.NodeName, c.cfg.Mode, c.cfg.Link, nodes)
	n, err := apply(c.dp, want, c.cfg.Link, vxlanDev)
	if err != nil {
		return fmt.Errorf("apply routes: %w", err)
	}
	if n > 0 {
		c.log.Info("podnet synced", "changes", n, "routes", len(want.Routes), "neighbors", len(want.Neighbors), "took", time.Since(start))
	}
	return nil
}

// ensureVXLAN creates this node's VTEP and publishes its MAC on the Node.
func (c *Controller) ensureVXLAN(ctx context.Context, nodes []nodeInfo) error {
	var self *nodeInfo
	for i := range nodes {
		if nodes[i].Name == c.cfg.NodeName {
			self = &nodes[i]
		}
	}
	if self == nil || !self.InternalIP.IsValid() {
		return fmt.Errorf("node %s has no InternalIP yet: the VXLAN device needs it as the tunnel source", c.cfg.NodeName)
	}
	var gw netip.Addr
	if len(self.PodCIDRs) > 0 {
		gw = vxlanGateway(self.PodCIDRs[0])
	}
	mac, err := c.dp.EnsureVXLAN(VXLANSpec{
		Name: VXLANDevice, VNI: VXLANVNI, Port: VXLANPort, Local: self.InternalIP,
		Underlay: c.cfg.Link, MAC: vtepMAC(self.InternalIP), Addr: gw,
	})
	if err != nil {
		return fmt.Errorf("ensure %s: %w", VXLANDevice, err)
	}
	if self.VTEPMAC.String() == mac.String() {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{VTEPMACAnnotation: mac.String()}}})
	_, err = c.cfg.Client.CoreV1().Nodes().Patch(ctx, c.cfg.NodeName, k8stypes.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("publish VTEP MAC on node %s: %w", c.cfg.NodeName, err)
	}
	c.log.Info("published VTEP MAC", "mac", mac.String())
	return nil
}
