package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"knet/internal/cni"
	"knet/internal/netnsrun"
)

// guardProtocol marks the routes this package adds on the host so that teardown removes only
// them (rtnetlink protocol numbers above 4 are free for daemons; 0x4b = 'K').
const guardProtocol netlink.RouteProtocol = 0x4b

// underlayGSOMaxSize is the IPv4 GSO limit of every underlay link (BIG TCP):
// the one knet's CNI gives the node side of every pod and host-gw pods
// themselves, so no link of the cluster sends units another will not take (a
// packet above a device's limit is segmented in software, into MSS-sized
// packets). Node-to-node and host-to-node TCP use it too. Kernels before 6.3
// ignore it.
const underlayGSOMaxSize = cni.BigTCPGSOSize

// CheckAddressSpace fails when the cluster's ranges collide with a route the host already has
// (another bridge, a VPN, the uplink), because knet would then capture or leak that traffic.
func CheckAddressSpace(l Layout) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list host routes: %w", err)
	}
	br, _ := netlink.LinkByName(l.Bridge)
	for _, r := range routes {
		if r.Dst == nil || r.Protocol == guardProtocol || (br != nil && r.LinkIndex == br.Attrs().Index) {
			continue
		}
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue // the default route is not a collision: cluster ranges are more specific
		}
		p := netip.PrefixFrom(dst.Unmap(), ones)
		for what, mine := range map[string]netip.Prefix{"underlay": l.Underlay, "pod CIDR": l.PodCIDR} {
			if p.Overlaps(mine) {
				return fmt.Errorf("the cluster's %s %s overlaps the host route %s; remove that route or use another --name (each name gets its own ranges)", what, mine, p)
			}
		}
	}
	return nil
}

// SetupUnderlay creates the host bridge, one network namespace per node joined to it by a veth,
// and the host's guard route for the Service CIDR. Node namespaces get an address on eth0, lo up
// and IPv4 forwarding, and no default route: nothing in them can reach beyond the underlay.
// It is idempotent, so a restarted daemon can call it again.
func SetupUnderlay(l Layout) error {
	br, err := ensureBridge(l)
	if err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := ensureNode(l, n, br); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	// The host sends through the bridge; a bridge takes more than 64 KiB
	// only once it has ports.
	if err := ensureGSOMaxSize(netlink.LinkSetGSOIPv4MaxSize, br); err != nil {
		return err
	}
	for _, guard := range guardRoutes(l) {
		if err := netlink.RouteAdd(guard); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add guard route %s: %w", guard.Dst, err)
		}
	}
	return nil
}

// ensureGSOMaxSize raises a link's IPv4 GSO limit to underlayGSOMaxSize.
func ensureGSOMaxSize(set func(netlink.Link, int) error, link netlink.Link) error {
	if link.Attrs().GSOIPv4MaxSize == underlayGSOMaxSize {
		return nil
	}
	if err := set(link, underlayGSOMaxSize); err != nil {
		return fmt.Errorf("set gso_ipv4_max_size %d on %s: %w", underlayGSOMaxSize, link.Attrs().Name, err)
	}
	return nil
}

func ensureBridge(l Layout) (netlink.Link, error) {
	br, err := netlink.LinkByName(l.Bridge)
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = l.Bridge
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create underlay bridge %s: %w", l.Bridge, err)
		}
		if br, err = netlink.LinkByName(l.Bridge); err != nil {
			return nil, fmt.Errorf("find underlay bridge %s: %w", l.Bridge, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(l.Gateway.AsSlice()), Mask: net.CIDRMask(l.Underlay.Bits(), 32)}}
	if err := netlink.AddrReplace(br, addr); err != nil {
		return nil, fmt.Errorf("address %s on bridge %s: %w", addr, l.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", l.Bridge, err)
	}
	// Frames between nodes need no netfilter pass on the host (the nodes do their own NAT and
	// policy). These knobs skip br_netfilter on this bridge only where the host's
	// net.bridge.bridge-nf-call-iptables is 0: the kernel ORs the two, and knet leaves the
	// host-wide sysctl alone (other bridges, Docker's among them, rely on it). Where it is 1,
	// frames between nodes pass the host's ip hooks, so a host conntrack table costs them a
	// lookup each.
	for _, knob := range []string{"nf_call_iptables", "nf_call_ip6tables", "nf_call_arptables"} {
		path := filepath.Join("/sys/class/net", l.Bridge, "bridge", knob)
		if err := os.WriteFile(path, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return br, nil
}

func ensureNode(l Layout, n NodeLayout, br netlink.Link) error {
	ns, err := netns.GetFromName(n.Netns)
	if err != nil {
		if ns, err = newNamedNetns(n.Netns); err != nil {
			return err
		}
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", n.Netns, err)
	}
	defer h.Close()

	if _, err := h.LinkByName("eth0"); err != nil {
		// A leftover host end from a crashed run blocks the name; it is ours by name and bridge.
		if old, err := netlink.LinkByName(n.HostVeth); err == nil {
			_ = netlink.LinkDel(old)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = n.HostVeth
		attrs.MasterIndex = br.Attrs().Index
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s: %w", n.HostVeth, err)
		}
	}
	host, err := netlink.LinkByName(n.HostVeth)
	if err != nil {
		return fmt.Errorf("find %s: %w", n.HostVeth, err)
	}
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", n.HostVeth, l.Bridge, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %s: %w", n.HostVeth, err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	if err := ensureGSOMaxSize(netlink.LinkSetGSOIPv4MaxSize, host); err != nil {
		return err
	}
	if err := ensureGSOMaxSize(h.LinkSetGSOIPv4MaxSize, eth0); err != nil {
		return fmt.Errorf("in the node: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(n.IP.AsSlice()), Mask: net.CIDRMask(l.Underlay.Bits(), 32)}}
	if err := h.AddrReplace(eth0, addr); err != nil {
		return fmt.Errorf("address %s on eth0: %w", addr, err)
	}
	for _, name := range []string{"lo", "eth0"} {
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %s: %w", name, err)
		}
	}
	// Processes in the node (hostNetwork pods, the kubelet's probes) reach ClusterIPs: the route
	// only has to exist for connect() to proceed; the service proxy DNATs in the output hook.
	// Anything not DNATed dies at the host's unreachable guard route.
	svc := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(l.ServiceCIDR), Scope: netlink.SCOPE_LINK, Protocol: guardProtocol}
	if err := h.RouteReplace(svc); err != nil {
		return fmt.Errorf("route Service CIDR %s in the node: %w", l.ServiceCIDR, err)
	}
	return netnsrun.Run(ns, func() error {
		for key, val := range map[string]string{
			"net/ipv4/ip_forward":                 "1",
			"net/ipv4/conf/all/route_localnet":    "1", // NodePort on 127.0.0.1 inside the node
			"net/bridge/bridge-nf-call-iptables":  "1",
			"net/bridge/bridge-nf-call-ip6tables": "1",
			"net/ipv4/conf/all/rp_filter":         "0",
			"net/ipv4/conf/default/rp_filter":     "0",
		} {
			if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
			}
		}
		return nil
	})
}

// newNamedNetns creates /run/netns/<name> without leaving the calling thread in it.
func newNamedNetns(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		ns.Close()
		return 0, fmt.Errorf("return to host netns: %w", err)
	}
	return ns, nil
}

// guardRoutes make the cluster's Service and pod ranges unreachable from the host rather than
// routed out its uplink: Service IPs exist only inside nodes, and a pod /24 whose host route is
// missing (a node not yet registered) must fail here, not leak. The per-node pod routes are more
// specific and win. Each cluster owns its own copies (metric 1000+index): clusters share the
// Service CIDR, and one cluster's teardown must not remove another's guard.
func guardRoutes(l Layout) []*netlink.Route {
	var rs []*netlink.Route
	for _, p := range []netip.Prefix{l.ServiceCIDR, l.PodCIDR} {
		rs = append(rs, &netlink.Route{Dst: prefixNet(p), Type: unix.RTN_UNREACHABLE, Protocol: guardProtocol, Priority: 1000 + l.Index})
	}
	return rs
}

// TeardownUnderlay removes the node namespaces, their veths, the bridge, the cluster's guard
// route and any pod routes left. Missing objects are not errors: it also cleans up after a crash
// half-way through setup.
func TeardownUnderlay(l Layout) error {
	var errs []error
	for _, n := range l.Nodes {
		if link, err := netlink.LinkByName(n.HostVeth); err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", n.HostVeth, err))
			}
		}
		if err := netns.DeleteNamed(n.Netns); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", n.Netns, err))
		}
	}
	if br, err := netlink.LinkByName(l.Bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", l.Bridge, err))
		}
	}
	for _, guard := range guardRoutes(l) {
		if err := netlink.RouteDel(guard); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete guard route %s: %w", guard.Dst, err))
		}
	}
	// Routes via the bridge vanish with it; pod routes we added with our protocol number that are
	// left (e.g. via a deleted link) are removed explicitly.
	routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: guardProtocol}, netlink.RT_FILTER_PROTOCOL)
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if l.PodCIDR.Overlaps(netip.PrefixFrom(dst.Unmap(), ones)) {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
			}
		}
	}
	return errors.Join(errs...)
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
