// Package cni is knet's CNI plugin (spec 1.1): it connects a pod's network
// namespace to the node's bridge with a veth pair, takes the pod's address
// from internal/ipam, and maps hostPorts with nftables.
//
// It owns, in the node's network namespace (the namespace the plugin runs in):
// the bridge (default "knet0") and its gateway address, the host-side veths it
// creates (named "veth" + 8 hex digits of the attachment), the nftables table
// "inet knet-hostport", and the sysctls net.ipv4.ip_forward and
// net.bridge.bridge-nf-call-iptables. In the pod's namespace it owns the pod
// interface (CNI_IFNAME), its address and routes, and brings "lo" up. It never
// touches routes between nodes (internal/podnet), Service rules
// (internal/proxy) or any other nftables table.
//
// The plugin binary is the knet binary itself: cmd/knet calls PluginMain when
// CNI_COMMAND is set. Plugin exposes the same operations in-process.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

const (
	// PluginType is the "type" of knet's plugin in a conflist, which is also the
	// binary name the runtime looks up in its CNI bin dir.
	PluginType = "knet"
	// NetworkName is the conflist's network name.
	NetworkName = "knet"
	// ConfListFile is the file name WriteConfList writes in the conf dir.
	ConfListFile = "10-knet.conflist"
	// DefaultBridge is the node bridge pods attach to.
	DefaultBridge = "knet0"
	// DefaultMTU is the pod MTU on a plain underlay (VXLAN callers pass 1450).
	DefaultMTU = 1500
	// DefaultDataRoot is where IPAM state lives, one subdirectory per network name.
	DefaultDataRoot = "/var/lib/knet/ipam"
	// ConfListVersion is the CNI version of the rendered conflist.
	ConfListVersion = "1.1.0"
	// MaxGSOSize is the largest gsoMaxSize the kernel accepts on a veth or a
	// bridge (GSO_MAX_SIZE).
	MaxGSOSize = 524280
	// BigTCPGSOSize is the gsoMaxSize knet uses where every link of the pod
	// network is its own (knet up's host-gw mode). In bench/podnet it took
	// the CPU per GB of cross-node pod-to-pod TCP from 1.10x to 0.81x that of
	// a plain veth pair with the kernel's 64 KiB.
	BigTCPGSOSize = 262144
)

// PortMapping is one hostPort, in the format of the CNI "portMappings" capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// RuntimeConfig carries the capability arguments the runtime injects.
type RuntimeConfig struct {
	PortMappings []PortMapping `json:"portMappings,omitempty"`
}

// NetConf is knet's network configuration: the single plugin of the conflist,
// type "knet".
type NetConf struct {
	types.PluginConf

	Bridge  string `json:"bridge,omitempty"`
	PodCIDR string `json:"podCIDR"`
	MTU     int    `json:"mtu,omitempty"`
	DataDir string `json:"dataDir,omitempty"`
	// HairpinMode lets a pod reach itself through its own Service, whose
	// DNAT sends the packet back out the port it came in on. Default true; a
	// pointer so an explicit false in JSON survives Defaults.
	HairpinMode *bool `json:"hairpinMode,omitempty"`
	// GSOMaxSize, if set, is the IPv4 GSO limit (bytes) of the pod's end of
	// its veth ("BIG TCP", Linux 6.3+): TCP in the pod then sends up to that
	// much per packet, and every hop (veth, bridge, conntrack, routing) costs
	// once per unit instead of once per 64 KiB. 0 keeps the kernel default
	// (64 KiB). The node's side (bridge, host ends) always takes at least
	// BigTCPGSOSize, which only lets the node deliver larger units to its pods.
	// Set it only when every device pod traffic crosses has at least this
	// limit: the kernel segments a packet above a device's limit in software,
	// into MSS-sized packets, far slower than not raising it at all. A VXLAN
	// device cannot carry more than 64 KiB.
	GSOMaxSize int `json:"gsoMaxSize,omitempty"`

	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
}

// Defaults fills in the documented defaults.
func (c *NetConf) Defaults() {
	if c.CNIVersion == "" {
		c.CNIVersion = ConfListVersion
	}
	if c.Name == "" {
		c.Name = NetworkName
	}
	if c.Type == "" {
		c.Type = PluginType
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.DataDir == "" {
		c.DataDir = filepath.Join(DefaultDataRoot, c.Name)
	}
	if c.HairpinMode == nil {
		t := true
		c.HairpinMode = &t
	}
}

// Validate checks the fields the plugin needs. Call Defaults first.
func (c *NetConf) Validate() error {
	if c.PodCIDR == "" {
		return errors.New("podCIDR is empty: set it to the node's spec.podCIDR (e.g. 10.244.1.0/24)")
	}
	if _, err := c.podCIDR(); err != nil {
		return err
	}
	if len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/ \t\n") {
		return fmt.Errorf("bridge name %q is not a valid interface name (at most 15 characters, no '/' or spaces)", c.Bridge)
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return fmt.Errorf("mtu %d out of range 576..65535", c.MTU)
	}
	if c.GSOMaxSize != 0 && (c.GSOMaxSize < 65536 || c.GSOMaxSize > MaxGSOSize) {
		return fmt.Errorf("gsoMaxSize %d out of range 65536..%d: leave it out (or 0) for the kernel default", c.GSOMaxSize, MaxGSOSize)
	}
	if !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("dataDir %q must be an absolute path", c.DataDir)
	}
	for _, pm := range c.RuntimeConfig.PortMappings {
		if err := pm.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c *NetConf) podCIDR() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(c.PodCIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("podCIDR %q is not an IPv4 prefix of /30 or larger: set it to the node's spec.podCIDR", c.PodCIDR)
	}
	return p.Masked(), nil
}

func (c *NetConf) hairpin() bool { return c.HairpinMode == nil || *c.HairpinMode }

func (pm PortMapping) validate() error {
	if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return fmt.Errorf("portMapping %d->%d: ports must be 1..65535", pm.HostPort, pm.ContainerPort)
	}
	switch strings.ToLower(pm.Protocol) {
	case "", "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("portMapping %d: protocol %q is not tcp, udp or sctp", pm.HostPort, pm.Protocol)
	}
	return nil
}

func (pm PortMapping) proto() string {
	if pm.Protocol == "" {
		return "tcp"
	}
	return strings.ToLower(pm.Protocol)
}

// parseConf decodes stdin data into a NetConf with defaults, or a CNI error
// (code 6 for undecodable JSON, 7 for an invalid config).
func parseConf(data []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "knet: cannot decode network config", err.Error())
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "knet: invalid network config", err.Error())
	}
	return c, nil
}

// ConfList renders the conflist a runtime reads from its conf dir: cniVersion
// 1.1.0, network "knet", one plugin of type "knet" with the portMappings
// capability. Runtime-only fields (runtimeConfig, prevResult) are not written.
func ConfList(c NetConf) ([]byte, error) {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("render CNI conflist: %w", err)
	}
	plugin := map[string]any{
		"type":         c.Type,
		"bridge":       c.Bridge,
		"podCIDR":      c.PodCIDR,
		"mtu":          c.MTU,
		"dataDir":      c.DataDir,
		"hairpinMode":  c.hairpin(),
		"capabilities": map[string]bool{"portMappings": true},
	}
	if c.GSOMaxSize != 0 {
		plugin["gsoMaxSize"] = c.GSOMaxSize
	}
	list := map[string]any{
		"cniVersion": ConfListVersion,
		"name":       c.Name,
		"plugins":    []any{plugin},
	}
	return json.MarshalIndent(list, "", "  ")
}

// WriteConfList writes ConfList(c) to <dir>/10-knet.conflist atomically
// (temp file + rename), so a runtime watching the dir never reads half a file.
func WriteConfList(dir string, c NetConf) error {
	b, err := ConfList(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create CNI conf dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".knet-conflist-*")
	if err != nil {
		return fmt.Errorf("write CNI conflist: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write CNI conflist: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write CNI conflist: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write CNI conflist: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, ConfListFile)); err != nil {
		return fmt.Errorf("install CNI conflist: %w", err)
	}
	return nil
}
