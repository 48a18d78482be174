package proxy

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Conntrack deletes conntrack entries. The default implementation is
// netlink in the proxy's network namespace.
type Conntrack interface {
	// DeleteUDP deletes the IPv4 entries filter matches and returns how many.
	DeleteUDP(filter netlink.CustomConntrackFilter) (uint, error)
}

// NetlinkConntrack implements Conntrack with a netlink handle; the zero
// value uses the current network namespace.
type NetlinkConntrack struct {
	Handle *netlink.Handle
}

// DeleteUDP implements Conntrack.
func (n NetlinkConntrack) DeleteUDP(filter netlink.CustomConntrackFilter) (uint, error) {
	if n.Handle != nil {
		return n.Handle.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filter)
	}
	return netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filter)
}

// udpFrontends maps every UDP Service frontend (ClusterIP, externalIP,
// LoadBalancer IP, node IP . NodePort) to the endpoints it may be DNATed to.
type udpFrontends map[netip.AddrPort]map[netip.AddrPort]bool

func udpFrontendsOf(st *State) udpFrontends {
	out := udpFrontends{}
	if st == nil {
		return out
	}
	for i := range st.ServicePorts {
		sp := &st.ServicePorts[i]
		if sp.Protocol != "udp" {
			continue
		}
		eps := map[netip.AddrPort]bool{}
		for _, list := range [][]Endpoint{sp.ClusterEndpoints, sp.LocalEndpoints} {
			for _, ep := range list {
				eps[netip.AddrPortFrom(ep.IP, ep.Port)] = true
			}
		}
		add := func(ip netip.Addr, port uint16) {
			k := netip.AddrPortFrom(ip, port)
			if out[k] == nil {
				out[k] = map[netip.AddrPort]bool{}
			}
			for ep := range eps {
				out[k][ep] = true
			}
		}
		add(sp.ClusterIP, sp.Port)
		for _, ip := range sp.ExternalIPs {
			add(ip, sp.Port)
		}
		for _, ip := range sp.LoadBalancerIPs {
			add(ip, sp.Port)
		}
		if sp.NodePort != 0 {
			for _, ip := range st.NodeIPs {
				add(ip, sp.NodePort)
			}
		}
	}
	return out
}

func (f udpFrontends) equal(o udpFrontends) bool {
	if len(f) != len(o) {
		return false
	}
	for k, eps := range f {
		oeps, ok := o[k]
		if !ok || len(eps) != len(oeps) {
			return false
		}
		for ep := range eps {
			if !oeps[ep] {
				return false
			}
		}
	}
	return true
}

// staleUDPFilter matches UDP flows that were DNATed from a Service frontend
// to an endpoint that is no longer one of the frontend's endpoints. Without
// deleting them, a UDP client that keeps sending (DNS, for one) stays
// pinned to a dead endpoint forever (kubernetes/kubernetes#19029).
// Frontends of the previous state that vanished keep no endpoints, so
// their DNATed flows are deleted too.
type staleUDPFilter struct {
	frontends udpFrontends
}

func newStaleUDPFilter(prev, next *State) *staleUDPFilter {
	f := udpFrontendsOf(next)
	for k := range udpFrontendsOf(prev) {
		if _, ok := f[k]; !ok {
			f[k] = map[netip.AddrPort]bool{}
		}
	}
	return &staleUDPFilter{frontends: f}
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (s *staleUDPFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst, ok1 := netip.AddrFromSlice(flow.Forward.DstIP.To4())
	replySrc, ok2 := netip.AddrFromSlice(flow.Reverse.SrcIP.To4())
	if !ok1 || !ok2 {
		return false
	}
	eps, ok := s.frontends[netip.AddrPortFrom(dst, flow.Forward.DstPort)]
	if !ok {
		return false
	}
	if replySrc == dst && flow.Reverse.SrcPort == flow.Forward.DstPort {
		return false // not DNATed: nothing stale to forget
	}
	return !eps[netip.AddrPortFrom(replySrc, flow.Reverse.SrcPort)]
}

func (s *staleUDPFilter) String() string {
	return fmt.Sprintf("stale UDP flows of %d frontends", len(s.frontends))
}
