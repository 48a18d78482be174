package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// hostVethName derives the node-side veth name from the attachment, so DEL
// can find it again without state and two interfaces of one pod never clash.
func hostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "veth" + hex.EncodeToString(sum[:4])
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// nodeHandle opens one netlink socket in the calling thread's network
// namespace (the node's). One socket for the whole operation instead of one
// per call (what the package-level netlink functions do) saves a socket,
// bind and close per request.
func nodeHandle() (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("open netlink socket in the node netns: %w", err)
	}
	return h, nil
}

// podHandle opens a netlink socket bound to the pod's namespace, so the
// plugin configures the pod without switching the thread into it (no setns
// round trips, no thread left in the wrong namespace on error).
func podHandle(podNS ns.NetNS) (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(int(podNS.Fd())))
	if err != nil {
		return netlinksafe.Handle{}, fmt.Errorf("open netlink socket in pod netns %s: %w", podNS.Path(), err)
	}
	return h, nil
}

// ensureBridge makes sure the bridge exists, is up, has the MTU and carries
// the gateway address. Concurrent ADDs may race to create it; EEXIST is fine.
func ensureBridge(h netlinksafe.Handle, name string, gw netip.Prefix, mtu int) (*netlink.Bridge, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, TxQLen: -1}}
		if err := h.LinkAdd(br); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s after creating it: %w", name, err)
		}
	}
	br, ok := link.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge: delete it or set another bridge name in the CNI config", name, link.Type())
	}
	if br.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(br, mtu); err != nil {
			return nil, fmt.Errorf("set MTU %d on bridge %s: %w", mtu, name, err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(gw)}
	if err := h.AddrAdd(br, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("add gateway %s to bridge %s: %w", gw, name, err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", name, err)
		}
	}
	return br, nil
}

// ensureSysctls enables forwarding, and makes bridged IPv4 traffic traverse
// the ip/inet nftables hooks so that a Service DNAT between two pods on the
// same bridge is seen by conntrack in both directions. It reads before it
// writes: after the first ADD on a node both are already 1, and a read of
// /proc/sys is cheaper than a write.
func ensureSysctls() error {
	for _, s := range []struct{ name, hint string }{
		{"net/ipv4/ip_forward", ""},
		{"net/bridge/bridge-nf-call-iptables", " (load the br_netfilter kernel module: modprobe br_netfilter)"},
	} {
		path := filepath.Join("/proc/sys", s.name)
		if cur, err := os.ReadFile(path); err == nil && len(cur) > 0 && cur[0] == '1' {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("set %s=1: %w%s", s.name, err, s.hint)
		}
	}
	return nil
}

// delLinkIfExists deletes a link by name; a missing link is not an error.
func delLinkIfExists(h netlinksafe.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := h.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// vethSpec is one pod attachment's veth pair.
type vethSpec struct {
	host, pod string
	podNS     ns.NetNS
	mtu       int
	hostGSO   int // IPv4 GSO limit of the host end (see nodeGSOMaxSize)
	bridge    *netlink.Bridge
	hairpin   bool
}

// createVeth creates the pair in one request: the host end in the node,
// enslaved to the bridge and up, the pod end directly in the pod's namespace.
// It returns both ends as the kernel reports them (index, MAC).
func createVeth(node, pod netlinksafe.Handle, s vethSpec) (host, podEnd netlink.Link, err error) {
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: s.host, MTU: s.mtu, TxQLen: -1, MasterIndex: s.bridge.Attrs().Index, Flags: net.FlagUp,
			GSOIPv4MaxSize: uint32(s.hostGSO),
		},
		PeerName:      s.pod,
		PeerMTU:       uint32(s.mtu),
		PeerTxQLen:    -1,
		PeerNamespace: netlink.NsFd(int(s.podNS.Fd())),
	}
	if err := node.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create veth pair %s/%s: %w", s.pod, s.host, err)
	}
	if host, err = node.LinkByName(s.host); err != nil {
		return nil, nil, fmt.Errorf("find host veth %s: %w", s.host, err)
	}
	if err := node.LinkSetHairpin(host, s.hairpin); err != nil {
		return nil, nil, fmt.Errorf("set hairpin mode on %s: %w", s.host, err)
	}
	// The pod can send router advertisements; the node must not act on them.
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", s.host, "accept_ra"), []byte("0"), 0o644)
	if podEnd, err = pod.LinkByName(s.pod); err != nil {
		return nil, nil, fmt.Errorf("find %s in pod: %w", s.pod, err)
	}
	return host, podEnd, nil
}

// nodeGSOMaxSize is the IPv4 GSO limit of the node's side of every pod
// (the bridge and the host ends of pod veths), whatever the pods send: the
// largest unit the node delivers to its pods unsplit. It equals the limit of
// knet up's underlay, so the host's and the nodes' own TCP to pods, and
// units pods on other nodes send, are never segmented in software at the
// bridge. A larger limit on a device costs nothing; it only lets local TCP
// that routes through it (the node's, to its pods) build larger units.
func nodeGSOMaxSize(podGSO int) int { return max(BigTCPGSOSize, podGSO) }

// raiseGSOLimits gives the bridge the node side's limit and then, if podGSO
// is set, the pod end of the veth podGSO (the host end got its limit when it
// was created). The order keeps a refusal harmless: the pod end caps what TCP
// in the pod sends, so it is raised only once the devices its packets cross
// on this node took their limit; on error the pod keeps sending 64 KiB units
// and works as before.
func raiseGSOLimits(node, pod netlinksafe.Handle, br *netlink.Bridge, podEnd netlink.Link, podGSO int) error {
	// The bridge is the output device for packets the node routes to its pods
	// (from other nodes, from the node itself). The kernel caps a bridge's
	// limit by its ports' and refuses more than 64 KiB while it has none, so
	// this waits for the first port; later ports keep it.
	if want := nodeGSOMaxSize(podGSO); int(br.Attrs().GSOIPv4MaxSize) < want {
		if err := setGSOMaxSize(node, br, want); err != nil {
			return err
		}
	}
	if podGSO > 0 {
		if err := setGSOMaxSize(pod, podEnd, podGSO); err != nil {
			return fmt.Errorf("in pod: %w", err)
		}
	}
	return nil
}

// setGSOMaxSize sets the IPv4 GSO limit of a link (BIG TCP): it caps the
// packets local TCP builds on it, and a forwarded packet above it is segmented
// in software. (The GRO limit is left alone: veths and bridges run no GRO.)
func setGSOMaxSize(h netlinksafe.Handle, link netlink.Link, size int) error {
	if err := h.LinkSetGSOIPv4MaxSize(link, size); err != nil {
		return fmt.Errorf("set gso_ipv4_max_size %d on %s: %w", size, link.Attrs().Name, err)
	}
	return nil
}

// configurePod gives the pod interface its address and default route via the
// bridge gateway, brings it up, and brings up the pod's loopback.
func configurePod(pod netlinksafe.Handle, link netlink.Link, addr netip.Prefix, gw netip.Addr) error {
	if err := pod.AddrAdd(link, &netlink.Addr{IPNet: prefixToIPNet(addr)}); err != nil {
		return fmt.Errorf("add address %s to %s in pod: %w", addr, link.Attrs().Name, err)
	}
	if err := pod.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in pod: %w", link.Attrs().Name, err)
	}
	def := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        net.IP(gw.AsSlice()),
	}
	if err := pod.RouteAdd(def); err != nil {
		return fmt.Errorf("add default route via %s in pod: %w", gw, err)
	}
	lo, err := pod.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in pod: %w", err)
	}
	if err := pod.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in pod: %w", err)
	}
	return nil
}
