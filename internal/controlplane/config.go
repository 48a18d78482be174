package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
)

// Config describes one embedded control plane. Every field except DataDir
// has a default (see Defaults); AdvertiseAddress should be set to an address
// the nodes can reach.
type Config struct {
	// DataDir holds all state: etcd data, PKI, kubeconfigs and logs. It is
	// created if missing and reused on restart, so a restart keeps the
	// cluster's objects and credentials.
	DataDir string
	// BindAddress is the local address the API server listens on next to
	// AdvertiseAddress, and the server of the admin kubeconfig. It must be a
	// specific address: an unspecified one ("0.0.0.0", "::") would expose the
	// API server on the host's real uplink. Default "127.0.0.1".
	BindAddress string
	// AdvertiseAddress is the address nodes use to reach the API server (the
	// underlay gateway, e.g. 172.18.0.1). It is the endpoint of the
	// `kubernetes` Service and a SAN of the serving certificate. Default:
	// BindAddress, which only suits a control plane without nodes elsewhere.
	AdvertiseAddress net.IP
	// SecurePort is the API server's HTTPS port on both addresses. Default 6443.
	SecurePort int
	// ServiceCIDR is the Service ClusterIP range; its first address is the
	// `kubernetes` Service. Default "10.96.0.0/12".
	ServiceCIDR string
	// ClusterCIDR is the pod range; the node-ipam controller gives each Node
	// a /NodeCIDRMaskSize of it as spec.podCIDR. Default "10.244.0.0/16".
	ClusterCIDR string
	// NodeCIDRMaskSize is the prefix length of each Node's podCIDR. Default 24.
	NodeCIDRMaskSize int
	// EtcdPort is etcd's client port on 127.0.0.1. Default SecurePort+10000.
	EtcdPort int
	// EtcdPeerPort is etcd's peer port on 127.0.0.1 (a single member still
	// needs one). Default EtcdPort+1.
	EtcdPeerPort int
	// Logger receives knet's own lifecycle logs. The upstream components log
	// through klog to DataDir/logs/controlplane.log instead. Default
	// slog.Default().
	Logger *slog.Logger
}

// Defaults fills every unset field except DataDir.
func (c *Config) Defaults() {
	if c.BindAddress == "" {
		c.BindAddress = "127.0.0.1"
	}
	if c.AdvertiseAddress == nil {
		c.AdvertiseAddress = net.ParseIP(c.BindAddress)
	}
	if c.SecurePort == 0 {
		c.SecurePort = 6443
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.96.0.0/12"
	}
	if c.ClusterCIDR == "" {
		c.ClusterCIDR = "10.244.0.0/16"
	}
	if c.NodeCIDRMaskSize == 0 {
		c.NodeCIDRMaskSize = 24
	}
	if c.EtcdPort == 0 {
		c.EtcdPort = c.SecurePort + 10000
	}
	if c.EtcdPeerPort == 0 {
		c.EtcdPeerPort = c.EtcdPort + 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required: set it to a directory for etcd data, certificates and kubeconfigs"))
	} else if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("DataDir %q must be an absolute path", c.DataDir))
	}

	bind, err := netip.ParseAddr(c.BindAddress)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("BindAddress %q is not an IP address: %w", c.BindAddress, err))
	case bind.IsUnspecified():
		errs = append(errs, fmt.Errorf("BindAddress %q would listen on every interface, including the host's uplink; use 127.0.0.1", c.BindAddress))
	case !bind.Is4():
		errs = append(errs, fmt.Errorf("BindAddress %q: only IPv4 is supported", c.BindAddress))
	}

	adv, advOK := netip.AddrFromSlice(c.AdvertiseAddress)
	switch {
	case !advOK:
		errs = append(errs, errors.New("AdvertiseAddress is required: set it to the address nodes use to reach the API server"))
	case adv.Unmap().IsUnspecified():
		errs = append(errs, fmt.Errorf("AdvertiseAddress %s is unspecified; use the underlay gateway address", c.AdvertiseAddress))
	case !adv.Unmap().Is4():
		errs = append(errs, fmt.Errorf("AdvertiseAddress %s: only IPv4 is supported", c.AdvertiseAddress))
	}
	adv = adv.Unmap()

	ports := map[string]int{"SecurePort": c.SecurePort, "EtcdPort": c.EtcdPort, "EtcdPeerPort": c.EtcdPeerPort}
	seen := map[int]string{}
	for _, name := range []string{"SecurePort", "EtcdPort", "EtcdPeerPort"} {
		p := ports[name]
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s %d is outside 1-65535", name, p))
			continue
		}
		if other, dup := seen[p]; dup {
			errs = append(errs, fmt.Errorf("%s and %s are both %d; give each its own port", other, name, p))
		}
		seen[p] = name
	}

	service, err := netip.ParsePrefix(c.ServiceCIDR)
	if err != nil {
		errs = append(errs, fmt.Errorf("ServiceCIDR %q: %w", c.ServiceCIDR, err))
	} else if !service.Addr().Is4() || service.Bits() < 12 || service.Bits() > 28 {
		// kube-apiserver refuses IPv4 service ranges larger than /12.
		errs = append(errs, fmt.Errorf("ServiceCIDR %q must be an IPv4 prefix between /12 and /28", c.ServiceCIDR))
	} else if service != service.Masked() {
		errs = append(errs, fmt.Errorf("ServiceCIDR %q has host bits set; use %s", c.ServiceCIDR, service.Masked()))
	}

	cluster, err := netip.ParsePrefix(c.ClusterCIDR)
	if err != nil {
		errs = append(errs, fmt.Errorf("ClusterCIDR %q: %w", c.ClusterCIDR, err))
	} else if !cluster.Addr().Is4() {
		errs = append(errs, fmt.Errorf("ClusterCIDR %q must be IPv4", c.ClusterCIDR))
	} else if cluster != cluster.Masked() {
		errs = append(errs, fmt.Errorf("ClusterCIDR %q has host bits set; use %s", c.ClusterCIDR, cluster.Masked()))
	} else if c.NodeCIDRMaskSize <= cluster.Bits() || c.NodeCIDRMaskSize > 30 {
		errs = append(errs, fmt.Errorf("NodeCIDRMaskSize %d must be longer than ClusterCIDR's /%d and at most 30", c.NodeCIDRMaskSize, cluster.Bits()))
	} else if c.NodeCIDRMaskSize-cluster.Bits() > 16 {
		// The node-ipam controller refuses more than 2^16 node CIDRs.
		errs = append(errs, fmt.Errorf("NodeCIDRMaskSize %d splits ClusterCIDR %s into more than 65536 node ranges; use a mask at most %d", c.NodeCIDRMaskSize, c.ClusterCIDR, cluster.Bits()+16))
	}

	if service.IsValid() && cluster.IsValid() && service.Overlaps(cluster) {
		errs = append(errs, fmt.Errorf("ServiceCIDR %s overlaps ClusterCIDR %s; pick disjoint ranges", c.ServiceCIDR, c.ClusterCIDR))
	}
	if advOK {
		for name, p := range map[string]netip.Prefix{"ServiceCIDR": service, "ClusterCIDR": cluster} {
			if p.IsValid() && p.Contains(adv) {
				errs = append(errs, fmt.Errorf("AdvertiseAddress %s lies inside %s %s; use an underlay address", adv, name, p))
			}
		}
	}
	return errors.Join(errs...)
}

// firstServiceIP is the ClusterIP the `kubernetes` Service gets.
func firstServiceIP(serviceCIDR string) (net.IP, error) {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return nil, fmt.Errorf("parse ServiceCIDR %q: %w", serviceCIDR, err)
	}
	return net.IP(p.Masked().Addr().Next().AsSlice()), nil
}
