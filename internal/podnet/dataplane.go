package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VXLANSpec describes this node's VXLAN device.
type VXLANSpec struct {
	Name     string
	VNI      int
	Port     int
	Local    netip.Addr // this node's InternalIP
	Underlay string     // device the tunnel runs over
	MAC      net.HardwareAddr
	Addr     netip.Addr // this node's VXLAN gateway (its podCIDR's network address), as a /32
}

// Dataplane is the kernel side of the controller, bound to one network
// namespace. Routes lists only routes tagged with RouteProtocol.
type Dataplane interface {
	Routes() ([]Route, error)
	ReplaceRoute(Route) error
	DeleteRoute(Route) error
	// Neighbors lists the permanent ARP and FDB entries on dev ("" if dev is missing).
	Neighbors(dev string) ([]Neighbor, error)
	ReplaceNeighbor(Neighbor) error
	DeleteNeighbor(Neighbor) error
	// EnsureVXLAN creates or fixes the VXLAN device and returns its MAC.
	EnsureVXLAN(VXLANSpec) (net.HardwareAddr, error)
	// DeleteLink removes a link; a missing link is not an error.
	DeleteLink(name string) error
}

// apply makes the kernel match want and returns how many changes it made.
// Only entries this controller owns are considered: RouteProtocol routes on its
// link or its VXLAN device, permanent neighbors on the VXLAN device. Routes of
// the same protocol on other links belong to other controllers (on the host,
// every cluster's daemon has one for its own bridge) and are never touched.
func apply(dp Dataplane, want desired, link, vxlanDev string) (int, error) {
	changes := 0
	all, err := dp.Routes()
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	var have []Route
	haveByDst := map[netip.Prefix]Route{}
	for _, r := range all {
		if r.Dev != link && (vxlanDev == "" || r.Dev != vxlanDev) {
			continue
		}
		have = append(have, r)
		haveByDst[r.Dst] = r
	}
	wantDst := map[netip.Prefix]bool{}
	var errs []error
	for _, r := range want.Routes {
		wantDst[r.Dst] = true
		if cur, ok := haveByDst[r.Dst]; ok && cur == r {
			continue
		}
		// Neighbors first would be nicer for VXLAN, but a route without its
		// neighbor entry only delays traffic by one sync; keep the order simple.
		if err := dp.ReplaceRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		changes++
	}
	for _, r := range have {
		if wantDst[r.Dst] {
			continue
		}
		if err := dp.DeleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("delete stale route %s: %w", r, err))
			continue
		}
		changes++
	}

	if vxlanDev != "" {
		haveN, err := dp.Neighbors(vxlanDev)
		if err != nil {
			return changes, errors.Join(append(errs, fmt.Errorf("list neighbors on %s: %w", vxlanDev, err))...)
		}
		haveKeys := map[string]bool{}
		for _, n := range haveN {
			haveKeys[n.key()] = true
		}
		wantKeys := map[string]bool{}
		for _, n := range want.Neighbors {
			wantKeys[n.key()] = true
			if haveKeys[n.key()] {
				continue
			}
			if err := dp.ReplaceNeighbor(n); err != nil {
				errs = append(errs, fmt.Errorf("neighbor %s: %w", n.key(), err))
				continue
			}
			changes++
		}
		for _, n := range haveN {
			if wantKeys[n.key()] {
				continue
			}
			if err := dp.DeleteNeighbor(n); err != nil {
				errs = append(errs, fmt.Errorf("delete stale neighbor %s: %w", n.key(), err))
				continue
			}
			changes++
		}
	}
	return changes, errors.Join(errs...)
}

// netlinkDataplane programs the namespace its handle was opened in.
type netlinkDataplane struct {
	h netlinksafe.Handle
}

// newNetlinkDataplane binds to the calling thread's current network namespace,
// so the controller keeps working there whatever thread Run later uses.
func newNetlinkDataplane() (*netlinkDataplane, error) {
	cur, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open current netns: %w", err)
	}
	defer cur.Close()
	h, err := netlinksafe.NewHandleAt(cur)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	return &netlinkDataplane{h: h}, nil
}

func (d *netlinkDataplane) Close() { d.h.Close() }

func (d *netlinkDataplane) linkIndex(name string) (int, error) {
	l, err := d.h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", name, err)
	}
	return l.Attrs().Index, nil
}

func (d *netlinkDataplane) Routes() ([]Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	rs, err := d.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		name, ok := names[r.LinkIndex]
		if !ok {
			if l, err := d.h.LinkByIndex(r.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			names[r.LinkIndex] = name
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		ones, _ := r.Dst.Mask.Size()
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		out = append(out, Route{
			Dst: netip.PrefixFrom(dst, ones), Gw: gw, Dev: name,
			OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0,
		})
	}
	return out, nil
}

func (d *netlinkDataplane) toNetlink(r Route) (*netlink.Route, error) {
	idx, err := d.linkIndex(r.Dev)
	if err != nil {
		return nil, err
	}
	nr := &netlink.Route{
		LinkIndex: idx,
		Dst:       &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Gw:        r.Gw.AsSlice(),
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func (d *netlinkDataplane) ReplaceRoute(r Route) error {
	nr, err := d.toNetlink(r)
	if err != nil {
		return err
	}
	return d.h.RouteReplace(nr)
}

func (d *netlinkDataplane) DeleteRoute(r Route) error {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
	if err := d.h.RouteDel(nr); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func (d *netlinkDataplane) Neighbors(dev string) ([]Neighbor, error) {
	l, err := d.h.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, err
	}
	var out []Neighbor
	for _, fam := range []int{netlink.FAMILY_V4, unix.AF_BRIDGE} {
		ns, err := d.h.NeighList(l.Attrs().Index, fam)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			ns, err = d.h.NeighList(l.Attrs().Index, fam)
		}
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil || len(n.HardwareAddr) != 6 {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP.To4())
			if !ok {
				continue
			}
			out = append(out, Neighbor{Dev: dev, IP: ip, MAC: n.HardwareAddr, FDB: fam == unix.AF_BRIDGE})
		}
	}
	return out, nil
}

func (d *netlinkDataplane) toNeigh(n Neighbor) (*netlink.Neigh, error) {
	idx, err := d.linkIndex(n.Dev)
	if err != nil {
		return nil, err
	}
	nn := &netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, IP: n.IP.AsSlice(), HardwareAddr: n.MAC}
	if n.FDB {
		nn.Family = unix.AF_BRIDGE
		nn.Flags = netlink.NTF_SELF
	} else {
		nn.Family = netlink.FAMILY_V4
		nn.Type = unix.RTN_UNICAST
	}
	return nn, nil
}

func (d *netlinkDataplane) ReplaceNeighbor(n Neighbor) error {
	nn, err := d.toNeigh(n)
	if err != nil {
		return err
	}
	return d.h.NeighSet(nn)
}

func (d *netlinkDataplane) DeleteNeighbor(n Neighbor) error {
	nn, err := d.toNeigh(n)
	if err != nil {
		return err
	}
	if err := d.h.NeighDel(nn); err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	return nil
}

func (d *netlinkDataplane) EnsureVXLAN(s VXLANSpec) (net.HardwareAddr, error) {
	under, err := d.h.LinkByName(s.Underlay)
	if err != nil {
		return nil, fmt.Errorf("underlay %s: %w", s.Underlay, err)
	}
	mtu := under.Attrs().MTU - 50 // IPv4 + UDP + VXLAN + inner Ethernet headers
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: s.Name, MTU: mtu, HardwareAddr: s.MAC},
		VxlanId:      s.VNI,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      s.Local.AsSlice(),
		Port:         s.Port,
		Learning:     false,
	}
	l, err := d.h.LinkByName(s.Name)
	if err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.VxlanId != s.VNI || vx.Port != s.Port || !vx.SrcAddr.Equal(want.SrcAddr) ||
			vx.VtepDevIndex != want.VtepDevIndex || vx.Learning {
			// Wrong parameters cannot be changed in place; re-create.
			if err := d.h.LinkDel(l); err != nil {
				return nil, fmt.Errorf("delete outdated %s: %w", s.Name, err)
			}
			l = nil
		}
	} else {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return nil, err
		}
		l = nil
	}
	if l == nil {
		if err := d.h.LinkAdd(want); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("create %s: %w", s.Name, err)
		}
		if l, err = d.h.LinkByName(s.Name); err != nil {
			return nil, err
		}
	}
	if s.MAC != nil && l.Attrs().HardwareAddr.String() != s.MAC.String() {
		if err := d.h.LinkSetHardwareAddr(l, s.MAC); err != nil {
			return nil, fmt.Errorf("set %s MAC: %w", s.Name, err)
		}
	}
	if l.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set %s MTU: %w", s.Name, err)
		}
	}
	if s.Addr.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: s.Addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := d.h.AddrReplace(l, a); err != nil {
			return nil, fmt.Errorf("address %s on %s: %w", s.Addr, s.Name, err)
		}
	}
	if err := d.h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", s.Name, err)
	}
	l, err = d.h.LinkByName(s.Name)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

func (d *netlinkDataplane) DeleteLink(name string) error {
	l, err := d.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return d.h.LinkDel(l)
}

// Cleanup removes every route knet's controller made in the current network
// namespace (those with RouteProtocol) whose device is link, or all of them if
// link is "", and the VXLAN device. Used by `knet down` and after a crash.
func Cleanup(link string) error {
	d, err := newNetlinkDataplane()
	if err != nil {
		return err
	}
	defer d.Close()
	rs, err := d.Routes()
	if err != nil {
		return fmt.Errorf("list knet routes: %w", err)
	}
	var errs []error
	for _, r := range rs {
		if link != "" && r.Dev != link && r.Dev != VXLANDevice {
			continue
		}
		if err := d.DeleteRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
		}
	}
	if err := d.DeleteLink(VXLANDevice); err != nil {
		errs = append(errs, fmt.Errorf("delete %s: %w", VXLANDevice, err))
	}
	return errors.Join(errs...)
}
