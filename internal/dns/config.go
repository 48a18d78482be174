// Package dns is knet's cluster DNS server: it answers the names of the
// Kubernetes DNS-Based Service Discovery specification (schema 1.1.0) for
// Services, EndpointSlices and pod IPs under the cluster domain, the way
// CoreDNS's kubernetes plugin does, and forwards every other name to the
// configured upstream resolvers (or refuses it when there are none).
//
// It owns the DNS sockets (UDP and TCP on Config.Listen), its health HTTP
// endpoint (Config.HealthListen), its informers and its caches. It only
// reads the Kubernetes API (Namespaces, Services, EndpointSlices) and never
// writes to it; it never touches the kernel's routes, links or resolver, and sends
// traffic only to the configured upstreams.
package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// Config configures a Server. Call Defaults, then Validate (New does both).
type Config struct {
	// Source lists and watches Namespaces, Services and EndpointSlices
	// (NewSource). Required.
	Source Source
	// ClusterDomain is the zone answered from the API, e.g. "cluster.local".
	ClusterDomain string
	// Listen is the address of the UDP and TCP DNS listeners, e.g. ":53".
	Listen string
	// HealthListen is the address of the HTTP server for /healthz and /readyz.
	HealthListen string
	// Upstreams are "ip:port" resolvers for names outside the cluster domain,
	// tried in order. Empty means such names are answered REFUSED.
	Upstreams []string
	// TTL of every answer built from the API, in seconds (CoreDNS: 5).
	TTL uint32
	// UDPSockets is how many SO_REUSEPORT UDP sockets (one reader each) serve
	// DNS. 0 means one per CPU (GOMAXPROCS).
	UDPSockets int
	// MaxTCPConns bounds concurrent TCP connections; more wait in the
	// kernel's accept queue.
	MaxTCPConns int
	// ForwardWorkers bounds concurrent upstream lookups so a flood of
	// external names cannot grow goroutines without bound.
	ForwardWorkers int
	// CacheSize bounds the number of cached answers (cluster and forwarded).
	CacheSize int
	Logger    *slog.Logger
}

// Defaults fills unset fields with values that work in a standard cluster.
func (c *Config) Defaults() {
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.Listen == "" {
		c.Listen = ":53"
	}
	if c.HealthListen == "" {
		c.HealthListen = ":8080"
	}
	if c.TTL == 0 {
		c.TTL = 5
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = 256
	}
	if c.ForwardWorkers == 0 {
		c.ForwardWorkers = 64
	}
	if c.CacheSize == 0 {
		c.CacheSize = 20000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first invalid field and how to fix it.
func (c *Config) Validate() error {
	if err := c.Source.validate(); err != nil {
		return err
	}
	d := strings.TrimSuffix(c.ClusterDomain, ".")
	if d == "" {
		return errors.New("dns config: ClusterDomain is empty: use the kubelet's --cluster-domain, e.g. cluster.local")
	}
	if _, ok := dns.IsDomainName(d); !ok {
		return fmt.Errorf("dns config: ClusterDomain %q is not a valid domain name", c.ClusterDomain)
	}
	for _, l := range []struct{ name, addr string }{{"Listen", c.Listen}, {"HealthListen", c.HealthListen}} {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return fmt.Errorf("dns config: %s %q is not host:port (e.g. \":53\"): %w", l.name, l.addr, err)
		}
	}
	for _, u := range c.Upstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			return fmt.Errorf("dns config: upstream %q is not ip:port (e.g. 8.8.8.8:53; names are not resolved): %w", u, err)
		}
	}
	if c.UDPSockets < 0 || c.MaxTCPConns < 1 || c.ForwardWorkers < 1 || c.CacheSize < 1 {
		return fmt.Errorf("dns config: UDPSockets (%d) must be >= 0 and MaxTCPConns (%d), ForwardWorkers (%d), CacheSize (%d) >= 1",
			c.UDPSockets, c.MaxTCPConns, c.ForwardWorkers, c.CacheSize)
	}
	if c.TTL > 3600 {
		return fmt.Errorf("dns config: TTL %d is over an hour: cluster answers change with every rollout, keep it small (default 5)", c.TTL)
	}
	return nil
}

// UpstreamsFromResolvConf returns the nameservers of a resolv.conf file as
// "ip:53" upstreams, for a server that forwards to its node's resolvers
// (dnsPolicy: Default). Loopback nameservers are skipped: inside the DNS pod
// they would point back at a local stub, or at this server itself.
func UpstreamsFromResolvConf(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstreams from %s: %w", path, err)
	}
	var ups []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.IsLoopback() {
			continue
		}
		ups = append(ups, netip.AddrPortFrom(a.WithZone(""), 53).String())
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("read upstreams from %s: no usable nameserver line (loopback ones are skipped)", path)
	}
	return ups, nil
}
