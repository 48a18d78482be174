// Package cluster owns the kernel objects of a `knet up` cluster on one machine: the underlay
// bridge on the host, one network namespace per virtual node with its veth, the host's routes
// and guard route, the cgroup that holds every process the cluster started, and the state
// directory. It never talks to the Kubernetes API and never touches the host's real uplink.
package cluster

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
)

// DefaultName is the cluster name when --name is not given.
const DefaultName = "knet"

// StateRoot is where every cluster keeps its state, one directory per name.
const StateRoot = "/var/lib/knet"

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$`)

// ValidateName checks a cluster name. Names become part of link, namespace and cgroup names, so
// they are short DNS labels.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("cluster name %q is invalid: use 1-12 lowercase letters, digits or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Layout is every name and address a cluster uses, derived from its name and index so that
// several clusters can run side by side without colliding.
type Layout struct {
	Name  string `json:"name"`
	Index int    `json:"index"` // 0 for the first cluster on the machine; keeps ranges apart

	Underlay    netip.Prefix `json:"underlay"`    // node network; the host bridge holds Gateway
	Gateway     netip.Addr   `json:"gateway"`     // host side; the API server's address for nodes
	PodCIDR     netip.Prefix `json:"podCIDR"`     // cluster CIDR, one /24 per node
	ServiceCIDR netip.Prefix `json:"serviceCIDR"` // ClusterIPs; only reachable inside nodes
	LBPool      netip.Prefix `json:"lbPool"`      // default LoadBalancer pool, carved from the underlay
	ClusterDNS  netip.Addr   `json:"clusterDNS"`  // kube-dns Service IP
	APIPort     int          `json:"apiPort"`
	EtcdPort    int          `json:"etcdPort"`
	Bridge      string       `json:"bridge"` // host underlay bridge
	Nodes       []NodeLayout `json:"nodes"`
}

// NodeLayout is one virtual node.
type NodeLayout struct {
	Name     string     `json:"name"`     // Node object name and hostname
	Netns    string     `json:"netns"`    // named network namespace (/run/netns/<Netns>)
	HostVeth string     `json:"hostVeth"` // host end of the node's underlay veth, on the bridge
	IP       netip.Addr `json:"ip"`       // InternalIP, on the node's eth0
}

// NewLayout derives the layout of cluster `name` with `nodes` nodes at machine-wide index `index`.
// Index 0 uses the ranges users know from kind and kubeadm (172.18.0.0/16, 10.244.0.0/16); later
// indexes get a /24 underlay in 172.19.0.0/16 and their own pod range below 10.244.
func NewLayout(name string, index, nodes int) (Layout, error) {
	if err := ValidateName(name); err != nil {
		return Layout{}, err
	}
	if index < 0 || index > 200 {
		return Layout{}, fmt.Errorf("cluster index %d out of range 0-200 (too many clusters on this machine? run `knet down --name NAME` for unused ones)", index)
	}
	if nodes < 1 || nodes > 50 {
		return Layout{}, fmt.Errorf("--nodes %d out of range: use 1 to 50", nodes)
	}
	l := Layout{
		Name:        name,
		Index:       index,
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"),
		ClusterDNS:  netip.MustParseAddr("10.96.0.10"),
		APIPort:     6443 + index,
		EtcdPort:    22379 + 10*index,
		Bridge:      fmt.Sprintf("knet%d", index),
	}
	if index == 0 {
		l.Underlay = netip.MustParsePrefix("172.18.0.0/16")
		l.PodCIDR = netip.MustParsePrefix("10.244.0.0/16")
		l.LBPool = netip.MustParsePrefix("172.18.255.192/26")
	} else {
		l.Underlay = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 19, byte(index), 0}), 24)
		l.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(244 - index), 0, 0}), 16)
		l.LBPool = netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 19, byte(index), 192}), 26)
	}
	l.Gateway = l.Underlay.Addr().Next()
	ip := l.Gateway
	for i := 1; i <= nodes; i++ {
		ip = ip.Next()
		l.Nodes = append(l.Nodes, NodeLayout{
			Name:     fmt.Sprintf("%s-node%d", name, i),
			Netns:    fmt.Sprintf("knet-%s-node%d", name, i),
			HostVeth: fmt.Sprintf("knet%dn%d", index, i),
			IP:       ip,
		})
	}
	return l, nil
}

// Dir is the cluster's state directory.
func (l Layout) Dir() string { return filepath.Join(StateRoot, l.Name) }

// NodeDir is a node's state directory (kubelet state, CNI config, IPAM).
func (l Layout) NodeDir(node string) string { return filepath.Join(l.Dir(), "nodes", node) }

// CgroupName is the cgroup (v2) that holds every process of the cluster.
func (l Layout) CgroupName() string { return "knet-" + l.Name }

// APIServerURL is the API server address as nodes and pods reach it.
func (l Layout) APIServerURL() string { return fmt.Sprintf("https://%s:%d", l.Gateway, l.APIPort) }
