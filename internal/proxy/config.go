package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/knftables"
)

// TableName is the nftables table (family ip) the proxy owns alone.
const TableName = "knet-proxy"

// Config configures a Proxier. Call Defaults, then Validate.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	// NodeIPs are the node's addresses; NodePorts answer on these. Empty means
	// every local address except 127.0.0.0/8.
	NodeIPs []net.IP
	// ClusterCIDR is the pod range (e.g. 10.244.0.0/16). Traffic to a ClusterIP
	// from outside it is masqueraded so replies come back through this node.
	ClusterCIDR string
	// Zone is the node's topology.kubernetes.io/zone label, "" if none.
	Zone string
	// HealthCheckBindIP is where healthCheckNodePort servers listen (the node
	// IP). nil listens on all addresses of the namespace.
	HealthCheckBindIP net.IP
	// MinSyncInterval is the minimum time between two syncs; events inside
	// it are coalesced into one sync. Default 20ms: a sync is incremental,
	// and events that arrive while one runs are coalesced anyway, so a longer
	// wait only adds latency (a new Service is usually two events, the
	// Service and then its EndpointSlice, some ms apart).
	MinSyncInterval time.Duration
	// NewServiceWait is how long a sync for a new Service that has no
	// EndpointSlice yet waits for one, so both are programmed in one sync.
	// Default 50ms; negative means no wait.
	NewServiceWait time.Duration
	// SyncPeriod forces a full resync, which repairs a table someone else
	// edited. Default 1h, as kube-proxy: informers deliver every change, and
	// a full sync at 10k Services is ~500k nft operations.
	SyncPeriod time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// apply. Defaults 500ms and 30s.
	RetryMin, RetryMax time.Duration
	// MasqueradeMark is the packet mark bit that asks postrouting to
	// masquerade. Default 0x4000 (kube-proxy's); pick another bit if a
	// component in the same namespace uses it.
	MasqueradeMark uint32
	Recorder       record.EventRecorder
	Logger         *slog.Logger
	// NFT nil = knftables.New(knftables.IPv4Family, TableName) in the
	// current network namespace.
	NFT knftables.Interface
	// Conntrack nil = netlink in the current network namespace.
	Conntrack Conntrack
}

// Defaults fills unset optional fields.
func (c *Config) Defaults() {
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 20 * time.Millisecond
	}
	if c.NewServiceWait == 0 {
		c.NewServiceWait = 50 * time.Millisecond
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
	if c.MasqueradeMark == 0 {
		c.MasqueradeMark = 0x4000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Recorder == nil {
		// A recorder without a channel discards events.
		c.Recorder = &record.FakeRecorder{}
	}
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("proxy: Client is required"))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("proxy: NodeName is required (the Node object's name, used for local endpoints)"))
	}
	if _, err := c.clusterCIDR(); err != nil {
		errs = append(errs, err)
	}
	for _, ip := range c.NodeIPs {
		if ip.To4() == nil {
			errs = append(errs, fmt.Errorf("proxy: NodeIPs: %s is not IPv4; knet's proxy is IPv4-only", ip))
		}
	}
	if c.MasqueradeMark == 0 || c.MasqueradeMark&(c.MasqueradeMark-1) != 0 {
		errs = append(errs, fmt.Errorf("proxy: MasqueradeMark %#x must be a single bit", c.MasqueradeMark))
	}
	if c.MinSyncInterval < 0 || c.SyncPeriod <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("proxy: intervals must be positive and RetryMax >= RetryMin (call Defaults first)"))
	}
	return errors.Join(errs...)
}

func (c *Config) clusterCIDR() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("proxy: ClusterCIDR %q must be an IPv4 CIDR like 10.244.0.0/16 (the pod range)", c.ClusterCIDR)
	}
	return p.Masked(), nil
}

func (c *Config) nodeAddrs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range c.NodeIPs {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			out = append(out, a)
		}
	}
	return out
}
