package lbipam

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// IPAddressPoolSpec is the spec of a knet.dev/v1beta1 IPAddressPool, field
// for field MetalLB's.
type IPAddressPoolSpec struct {
	Addresses []string `json:"addresses"`
	// AutoAssign nil means true.
	AutoAssign        *bool                  `json:"autoAssign,omitempty"`
	AvoidBuggyIPs     bool                   `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *ServiceAllocationSpec `json:"serviceAllocation,omitempty"`
}

// ServiceAllocationSpec restricts a pool to some Services and orders pools.
type ServiceAllocationSpec struct {
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// addrRange is an inclusive IPv4 range.
type addrRange struct{ first, last netip.Addr }

func (r addrRange) contains(a netip.Addr) bool {
	return r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0
}

func (r addrRange) String() string {
	if r.first == r.last {
		return r.first.String()
	}
	return r.first.String() + "-" + r.last.String()
}

// Pool is a validated address pool, built-in or from an IPAddressPool.
type Pool struct {
	Name          string
	ranges        []addrRange
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Priority 0 means none: tried after every pool with a priority.
	Priority           int
	namespaces         []string
	namespaceSelectors []labels.Selector
	serviceSelectors   []labels.Selector
	// BuiltIn is the pool from ControllerConfig.DefaultPool.
	BuiltIn bool
	created time.Time
}

// Contains reports whether a is one of the pool's addresses, honouring
// AvoidBuggyIPs.
func (p *Pool) Contains(a netip.Addr) bool {
	if p.AvoidBuggyIPs && isBuggy(a) {
		return false
	}
	for _, r := range p.ranges {
		if r.contains(a) {
			return true
		}
	}
	return false
}

// allows reports whether the Service (namespace with its labels, Service
// labels) may use the pool. Like MetalLB: a namespace must be listed or
// match a selector when either is set; the Service must match a selector
// when any is set.
func (p *Pool) allows(ns string, nsLabels, svcLabels labels.Set) bool {
	if len(p.namespaces) > 0 || len(p.namespaceSelectors) > 0 {
		ok := slices.Contains(p.namespaces, ns)
		for _, s := range p.namespaceSelectors {
			ok = ok || s.Matches(nsLabels)
		}
		if !ok {
			return false
		}
	}
	if len(p.serviceSelectors) > 0 {
		for _, s := range p.serviceSelectors {
			if s.Matches(svcLabels) {
				return true
			}
		}
		return false
	}
	return true
}

// isBuggy reports addresses ending in .0 or .255, which some old network
// stacks treat as broadcast.
func isBuggy(a netip.Addr) bool {
	b := a.As4()
	return b[3] == 0 || b[3] == 255
}

// parseAddresses parses CIDRs, a.b.c.d-e.f.g.h ranges and single addresses
// (IPv4 only).
func parseAddresses(specs []string) ([]addrRange, error) {
	if len(specs) == 0 {
		return nil, errors.New("spec.addresses is empty; list CIDRs like 172.18.255.192/26 or ranges like 172.18.255.200-172.18.255.210")
	}
	var out []addrRange
	for _, s := range specs {
		s = strings.TrimSpace(s)
		var r addrRange
		if from, to, ok := strings.Cut(s, "-"); ok {
			a, err1 := netip.ParseAddr(strings.TrimSpace(from))
			b, err2 := netip.ParseAddr(strings.TrimSpace(to))
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("address range %q: want a.b.c.d-e.f.g.h", s)
			}
			r = addrRange{a, b}
		} else {
			p, err := netip.ParsePrefix(s)
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p, err = a.Prefix(a.BitLen()) // a bare address is a /32
			}
			if err != nil {
				return nil, fmt.Errorf("address %q is neither a CIDR nor a range a.b.c.d-e.f.g.h", s)
			}
			if !p.Addr().Is4() {
				return nil, fmt.Errorf("address %q is not IPv4; knet's LoadBalancer pools are IPv4-only", s)
			}
			p = p.Masked()
			r = addrRange{p.Addr(), lastAddr(p)}
		}
		if !r.first.Is4() || !r.last.Is4() {
			return nil, fmt.Errorf("address %q is not IPv4; knet's LoadBalancer pools are IPv4-only", s)
		}
		if r.last.Less(r.first) {
			return nil, fmt.Errorf("address range %q ends before it starts", s)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b addrRange) int { return a.first.Compare(b.first) })
	for i := 1; i < len(out); i++ {
		if out[i].first.Compare(out[i-1].last) <= 0 {
			return nil, fmt.Errorf("addresses %s and %s overlap", out[i-1], out[i])
		}
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= ^uint32(0) >> p.Bits() // a shift by 32 is 0 in Go: a /32 is one address
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// PoolProblem is why an IPAddressPool is ignored.
type PoolProblem struct {
	Pool    string
	Message string
}

// PoolSource is one IPAddressPool as read from the API.
type PoolSource struct {
	Name    string
	Created time.Time
	Spec    IPAddressPoolSpec
	// Err is set when the object could not be decoded into Spec.
	Err error
}

// PoolSourceFromUnstructured decodes an IPAddressPool read with the dynamic
// client.
func PoolSourceFromUnstructured(u *unstructured.Unstructured) PoolSource {
	src := PoolSource{Name: u.GetName(), Created: u.GetCreationTimestamp().Time}
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		src.Err = errors.New("spec is missing")
		return src
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &src.Spec); err != nil {
		src.Err = fmt.Errorf("decode spec: %w", err)
	}
	return src
}

// DefaultPoolName names the built-in pool in Events and logs.
const DefaultPoolName = "default"

// BuildPools validates the built-in pool (may be empty) and the
// IPAddressPools. A malformed pool, or one overlapping an older pool (the
// built-in pool is the oldest of all), is returned as a problem and left
// out; the others keep serving. Pools come back in the order allocation
// tries them: priority first (lower first, 0 = none = last), then name,
// built-in pool last.
func BuildPools(builtIn []string, srcs []PoolSource) ([]*Pool, []PoolProblem, error) {
	var pools []*Pool
	var problems []PoolProblem
	var taken []addrRange
	takenBy := map[addrRange]string{}
	overlap := func(rs []addrRange) string {
		for _, r := range rs {
			for _, t := range taken {
				if r.first.Compare(t.last) <= 0 && t.first.Compare(r.last) <= 0 {
					return fmt.Sprintf("addresses %s overlap %s of pool %q", r, t, takenBy[t])
				}
			}
		}
		return ""
	}
	take := func(p *Pool) {
		for _, r := range p.ranges {
			taken = append(taken, r)
			takenBy[r] = p.Name
		}
		pools = append(pools, p)
	}
	if len(builtIn) > 0 {
		rs, err := parseAddresses(builtIn)
		if err != nil {
			return nil, nil, fmt.Errorf("built-in LoadBalancer pool: %w", err)
		}
		// The built-in pool is carved from the underlay, whose .255 can be
		// the broadcast address; skip .0 and .255 as avoidBuggyIPs does.
		take(&Pool{Name: DefaultPoolName, ranges: rs, AutoAssign: true, AvoidBuggyIPs: true, BuiltIn: true})
	}
	srcs = slices.Clone(srcs)
	slices.SortFunc(srcs, func(a, b PoolSource) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
	})
	for _, s := range srcs {
		p, err := buildPool(s)
		if err != nil {
			problems = append(problems, PoolProblem{Pool: s.Name, Message: err.Error() + "; the pool is ignored until fixed"})
			continue
		}
		if msg := overlap(p.ranges); msg != "" {
			problems = append(problems, PoolProblem{Pool: s.Name, Message: msg + "; the newer pool is ignored until the overlap is removed"})
			continue
		}
		take(p)
	}
	slices.SortStableFunc(pools, func(a, b *Pool) int {
		if a.BuiltIn != b.BuiltIn {
			if a.BuiltIn {
				return 1
			}
			return -1
		}
		pa, pb := a.Priority, b.Priority
		if (pa == 0) != (pb == 0) {
			if pa == 0 {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(pa, pb), cmp.Compare(a.Name, b.Name))
	})
	return pools, problems, nil
}

func buildPool(s PoolSource) (*Pool, error) {
	if s.Err != nil {
		return nil, s.Err
	}
	rs, err := parseAddresses(s.Spec.Addresses)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		Name:          s.Name,
		ranges:        rs,
		AutoAssign:    s.Spec.AutoAssign == nil || *s.Spec.AutoAssign,
		AvoidBuggyIPs: s.Spec.AvoidBuggyIPs,
		created:       s.Created,
	}
	if sa := s.Spec.ServiceAllocation; sa != nil {
		if sa.Priority < 0 {
			return nil, fmt.Errorf("serviceAllocation.priority %d is negative", sa.Priority)
		}
		p.Priority = sa.Priority
		p.namespaces = sa.Namespaces
		for i := range sa.NamespaceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&sa.NamespaceSelectors[i])
			if err != nil {
				return nil, fmt.Errorf("serviceAllocation.namespaceSelectors[%d]: %w", i, err)
			}
			p.namespaceSelectors = append(p.namespaceSelectors, sel)
		}
		for i := range sa.ServiceSelectors {
			sel, err := metav1.LabelSelectorAsSelector(&sa.ServiceSelectors[i])
			if err != nil {
				return nil, fmt.Errorf("serviceAllocation.serviceSelectors[%d]: %w", i, err)
			}
			p.serviceSelectors = append(p.serviceSelectors, sel)
		}
	}
	return p, nil
}
