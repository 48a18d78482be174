package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
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

// ensureBridge makes sure the bridge exists, is up, has the MTU and carries
// the gateway address. Concurrent ADDs may race to create it; EEXIST is fine.
func ensureBridge(name string, gw netip.Prefix, mtu int) (*netlink.Bridge, error) {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, TxQLen: -1}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlinksafe.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s after creating it: %w", name, err)
		}
	}
	br, ok := link.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge: delete it or set another bridge name in the CNI config", name, link.Type())
	}
	if br.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(br, mtu); err != nil {
			return nil, fmt.Errorf("set MTU %d on bridge %s: %w", mtu, name, err)
		}
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(gw)}
	if err := netlink.AddrAdd(br, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return nil, fmt.Errorf("add gateway %s to bridge %s: %w", gw, name, err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", name, err)
		}
	}
	return br, nil
}

// ensureSysctls enables forwarding, and makes bridged IPv4 traffic traverse
// the ip/inet nftables hooks so that a Service DNAT between two pods on the
// same bridge is seen by conntrack in both directions.
func ensureSysctls() error {
	for _, s := range []struct{ name, hint string }{
		{"net/ipv4/ip_forward", ""},
		{"net/bridge/bridge-nf-call-iptables", " (load the br_netfilter kernel module: modprobe br_netfilter)"},
	} {
		cur, err := sysctl.Sysctl(s.name)
		if err == nil && cur == "1" {
			continue
		}
		if _, err := sysctl.Sysctl(s.name, "1"); err != nil {
			return fmt.Errorf("set %s=1: %w%s", s.name, err, s.hint)
		}
	}
	return nil
}

// delLinkIfExists deletes a link by name; a missing link is not an error.
func delLinkIfExists(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
