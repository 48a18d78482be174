package netpol

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
)

// addrRange is an inclusive IPv4 range; uint64 so hi+1 cannot overflow.
type addrRange struct{ lo, hi uint64 }

// portRange is an inclusive port range.
type portRange struct{ lo, hi int }

// box is traffic allowed from (or to) any address of addrs on any port of
// ports for protocol proto.
type box struct {
	addrs addrRange
	proto string // tcp, udp, sctp: nft's names
	ports portRange
}

var allAddrs = addrRange{0, 1<<32 - 1}

func addrToU(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

func uToAddr(u uint64) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

func hostRange(a netip.Addr) addrRange { u := addrToU(a); return addrRange{u, u} }

func prefixRange(p netip.Prefix) addrRange {
	p = p.Masked()
	lo := addrToU(p.Addr())
	return addrRange{lo, lo + 1<<(32-p.Bits()) - 1}
}

// ipBlockRanges is cidr minus every except, as disjoint ranges. Malformed
// or non-IPv4 CIDRs yield nothing (the API server validates them).
func ipBlockRanges(cidr string, except []string) []addrRange {
	c, err := netip.ParsePrefix(cidr)
	if err != nil || !c.Addr().Is4() {
		return nil
	}
	out := []addrRange{prefixRange(c)}
	for _, e := range except {
		x, err := netip.ParsePrefix(e)
		if err != nil || !x.Addr().Is4() {
			continue
		}
		out = subtract(out, prefixRange(x))
	}
	return out
}

func subtract(rs []addrRange, x addrRange) []addrRange {
	var out []addrRange
	for _, r := range rs {
		if x.hi < r.lo || x.lo > r.hi {
			out = append(out, r)
			continue
		}
		if r.lo < x.lo {
			out = append(out, addrRange{r.lo, x.lo - 1})
		}
		if r.hi > x.hi {
			out = append(out, addrRange{x.hi + 1, r.hi})
		}
	}
	return out
}

// mergeRanges sorts and merges overlapping or adjacent ranges: nftables
// interval sets refuse overlapping elements.
func mergeRanges(rs []addrRange) []addrRange {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b addrRange) int { return cmp.Compare(a.lo, b.lo) })
	out := []addrRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.lo <= last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

func mergePorts(ps []portRange) []portRange {
	if len(ps) == 0 {
		return nil
	}
	slices.SortFunc(ps, func(a, b portRange) int { return cmp.Compare(a.lo, b.lo) })
	out := []portRange{ps[0]}
	for _, p := range ps[1:] {
		last := &out[len(out)-1]
		if p.lo <= last.hi+1 {
			last.hi = max(last.hi, p.hi)
			continue
		}
		out = append(out, p)
	}
	return out
}

// disjointBoxes rewrites boxes as an equivalent list of pairwise disjoint
// boxes (nftables concatenated interval sets refuse overlaps): the address
// axis is cut at every box edge, each slice gets the union of the port
// ranges covering it, and neighbouring slices with equal ports are merged.
// The result is sorted by protocol, address, port, so it is deterministic.
func disjointBoxes(boxes []box) []box {
	byProto := map[string][]box{}
	for _, b := range boxes {
		byProto[b.proto] = append(byProto[b.proto], b)
	}
	protos := make([]string, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, p)
	}
	slices.Sort(protos)
	var out []box
	for _, proto := range protos {
		bs := byProto[proto]
		cuts := make([]uint64, 0, 2*len(bs))
		for _, b := range bs {
			cuts = append(cuts, b.addrs.lo, b.addrs.hi+1)
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		slices.SortFunc(bs, func(a, b box) int { return cmp.Compare(a.addrs.lo, b.addrs.lo) })

		type slice struct {
			addrs addrRange
			ports []portRange
		}
		var slicesOut []slice
		var active []box
		next := 0
		for i := 0; i+1 < len(cuts); i++ {
			lo, hi := cuts[i], cuts[i+1]-1
			for next < len(bs) && bs[next].addrs.lo <= lo {
				active = append(active, bs[next])
				next++
			}
			active = slices.DeleteFunc(active, func(b box) bool { return b.addrs.hi < lo })
			if len(active) == 0 {
				continue
			}
			ps := make([]portRange, len(active))
			for j, b := range active {
				ps[j] = b.ports
			}
			ps = mergePorts(ps)
			if n := len(slicesOut); n > 0 && slicesOut[n-1].addrs.hi+1 == lo && slices.Equal(slicesOut[n-1].ports, ps) {
				slicesOut[n-1].addrs.hi = hi
				continue
			}
			slicesOut = append(slicesOut, slice{addrRange{lo, hi}, ps})
		}
		for _, s := range slicesOut {
			for _, p := range s.ports {
				out = append(out, box{addrs: s.addrs, proto: proto, ports: p})
			}
		}
	}
	return out
}

// String renders the range as nft would print it: an address, a prefix or
// lo-hi.
func (r addrRange) String() string {
	lo := uToAddr(r.lo)
	if r.lo == r.hi {
		return lo.String()
	}
	size := r.hi - r.lo + 1
	if size&(size-1) == 0 && r.lo&(size-1) == 0 {
		return fmt.Sprintf("%s/%d", lo, 32-(bits.Len64(size)-1))
	}
	return lo.String() + "-" + uToAddr(r.hi).String()
}

func (p portRange) String() string {
	if p.lo == p.hi {
		return fmt.Sprint(p.lo)
	}
	return fmt.Sprintf("%d-%d", p.lo, p.hi)
}
