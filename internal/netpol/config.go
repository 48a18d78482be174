package netpol

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/knftables"
)

// Config configures a Controller. Call Defaults, then Validate.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	// NodeIPs are the node's addresses. Traffic from these (and from the pod
	// gateway) to local pods always passes, as NetworkPolicy requires for
	// kubelet probes.
	NodeIPs []net.IP
	// PodCIDR is this node's pod range (e.g. 10.244.1.0/24); its first
	// address is the bridge gateway, which is always allowed too. Optional:
	// local pods are found by spec.nodeName.
	PodCIDR string
	// MinSyncInterval is the minimum time between two syncs; bursts of
	// events inside it are coalesced. Default 100ms.
	MinSyncInterval time.Duration
	// SyncPeriod forces a full rebuild of the table, which repairs edits made
	// behind knet's back. Default 1h.
	SyncPeriod time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// apply. Defaults 500ms and 30s.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
	// NFT nil = knftables.New(knftables.IPv4Family, TableName) in the
	// current network namespace.
	NFT knftables.Interface
}

// Defaults fills unset optional fields.
func (c *Config) Defaults() {
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 100 * time.Millisecond
	}
	if c.SyncPeriod == 0 {
		c.SyncPeriod = time.Hour
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
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("netpol: Client is required"))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("netpol: NodeName is required (the Node object's name; pods with this spec.nodeName are policed)"))
	}
	for _, ip := range c.NodeIPs {
		if ip.To4() == nil {
			errs = append(errs, fmt.Errorf("netpol: NodeIPs: %s is not IPv4; knet's NetworkPolicy enforcement is IPv4-only", ip))
		}
	}
	if c.PodCIDR != "" {
		if p, err := netip.ParsePrefix(c.PodCIDR); err != nil || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("netpol: PodCIDR %q must be an IPv4 CIDR like 10.244.1.0/24 (this node's pod range) or empty", c.PodCIDR))
		}
	}
	if c.MinSyncInterval < 0 || c.SyncPeriod <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("netpol: intervals must be positive and RetryMax >= RetryMin (call Defaults first)"))
	}
	return errors.Join(errs...)
}

// alwaysAllowed is the node's addresses plus the pod gateway (the first
// address of PodCIDR, as ipam reserves it).
func (c *Config) alwaysAllowed() []netip.Addr {
	var out []netip.Addr
	for _, ip := range c.NodeIPs {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			out = append(out, a)
		}
	}
	if p, err := netip.ParsePrefix(c.PodCIDR); err == nil && p.Addr().Is4() {
		out = append(out, p.Masked().Addr().Next())
	}
	return out
}
