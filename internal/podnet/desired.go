package podnet

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// nodeInfo is the slim view of a Node the routing decision needs.
type nodeInfo struct {
	Name       string
	InternalIP netip.Addr
	PodCIDRs   []netip.Prefix
	VTEPMAC    net.HardwareAddr // from the knet.dev/vtep-mac annotation; nil if unset or invalid
}

// nodeInfoFrom converts at the informer edge; IPv6 CIDRs and addresses are
// ignored (pods are IPv4-only for now).
func nodeInfoFrom(n *corev1.Node) nodeInfo {
	info := nodeInfo{Name: n.Name}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			info.InternalIP = ip
			break
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
			info.PodCIDRs = append(info.PodCIDRs, p.Masked())
		}
	}
	if mac, err := net.ParseMAC(n.Annotations[VTEPMACAnnotation]); err == nil && len(mac) == 6 {
		info.VTEPMAC = mac
	}
	return info
}

// Route is one route knet keeps in the main table (always tagged with
// RouteProtocol by the dataplane).
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Dev    string
	OnLink bool
}

func (r Route) String() string {
	s := fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, r.Dev)
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neighbor is a permanent entry on the VXLAN device: an ARP entry (peer's
// VXLAN gateway IP -> peer VTEP MAC) or, with FDB set, a forwarding entry
// (peer VTEP MAC -> peer node IP as the tunnel destination).
type Neighbor struct {
	Dev string
	IP  netip.Addr
	MAC net.HardwareAddr
	FDB bool
}

func (n Neighbor) key() string {
	return fmt.Sprintf("%s|%v|%s|%s", n.Dev, n.FDB, n.IP, strings.ToLower(n.MAC.String()))
}

// desired is everything one sync wants in the kernel.
type desired struct {
	Routes    []Route
	Neighbors []Neighbor
}

// vxlanGateway is the address a node's VXLAN device carries and peers route
// through: the network address of its podCIDR, which IPAM never hands out.
func vxlanGateway(podCIDR netip.Prefix) netip.Addr { return podCIDR.Masked().Addr() }

// desiredState computes the routes (and, for VXLAN, neighbor and FDB entries)
// from the Node list. self is this node's name, or "" on the host, which routes
// every node's podCIDR via the node's InternalIP whatever the mode, because
// the host sits on the underlay but is not a VXLAN peer. Nodes without an
// InternalIP or podCIDR are skipped, and in VXLAN mode so are peers that have
// not published a VTEP MAC yet; they get routes on a later sync.
func desiredState(self string, mode Mode, link string, nodes []nodeInfo) desired {
	var d desired
	for _, n := range nodes {
		if n.Name == self || !n.InternalIP.IsValid() || len(n.PodCIDRs) == 0 {
			continue
		}
		if mode == ModeHostGW || self == "" {
			for _, c := range n.PodCIDRs {
				d.Routes = append(d.Routes, Route{Dst: c, Gw: n.InternalIP, Dev: link})
			}
			continue
		}
		if n.VTEPMAC == nil {
			continue
		}
		for _, c := range n.PodCIDRs {
			gw := vxlanGateway(c)
			d.Routes = append(d.Routes, Route{Dst: c, Gw: gw, Dev: VXLANDevice, OnLink: true})
			d.Neighbors = append(d.Neighbors, Neighbor{Dev: VXLANDevice, IP: gw, MAC: n.VTEPMAC})
		}
		d.Neighbors = append(d.Neighbors, Neighbor{Dev: VXLANDevice, IP: n.InternalIP, MAC: n.VTEPMAC, FDB: true})
	}
	slices.SortFunc(d.Routes, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	slices.SortFunc(d.Neighbors, func(a, b Neighbor) int { return strings.Compare(a.key(), b.key()) })
	return d
}

// vtepMAC derives a stable, locally administered unicast MAC from the node
// IP, so a re-created VXLAN device keeps the address its peers already know.
func vtepMAC(nodeIP netip.Addr) net.HardwareAddr {
	b := nodeIP.As4()
	return net.HardwareAddr{0x0e, 0x6b, b[0], b[1], b[2], b[3]}
}
