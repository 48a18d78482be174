package lbipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// LoadBalancerClass is the spec.loadBalancerClass knet handles; Services
// without a class are handled too, Services with another class never.
const LoadBalancerClass = "knet.dev/lb"

// Annotations, each in knet's spelling and MetalLB's. knet's wins when a
// Service carries both.
var (
	annotationsIPs     = []string{"knet.dev/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"}
	annotationsSharing = []string{"knet.dev/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"}
	annotationsPool    = []string{"knet.dev/address-pool", "metallb.universe.tf/address-pool"}
)

// Inputs is everything allocation depends on.
type Inputs struct {
	// Pools in the order BuildPools returns them.
	Pools    []*Pool
	Services []*v1.Service
	// NamespaceLabels are the labels of each Namespace, for
	// serviceAllocation.namespaceSelectors.
	NamespaceLabels map[string]map[string]string
}

// Allocation is the address a Service should have; the zero value means
// none (pending, or released).
type Allocation struct {
	IP   netip.Addr
	Pool string
}

// Problem is why a Service has no address (or not the one it asked for).
type Problem struct {
	Service types.NamespacedName
	Reason  string
	Message string
}

// Result is the desired status of every Service the controller manages.
type Result struct {
	// Desired holds every handled LoadBalancer Service, and every other
	// Service that still shows an address from a pool (to be released).
	Desired  map[types.NamespacedName]Allocation
	Problems []Problem
}

// Handled reports whether knet allocates for svc: type LoadBalancer and
// loadBalancerClass nil or LoadBalancerClass.
func Handled(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer &&
		(svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == LoadBalancerClass)
}

type portKey struct {
	proto v1.Protocol
	port  int32
}

// request is a Service as allocation sees it.
type request struct {
	key     types.NamespacedName
	created time.Time
	nsLabel labels.Set
	labels  labels.Set
	// requested is the address the Service asks for, if valid.
	requested  netip.Addr
	requestErr string
	pool       string
	sharing    string
	// backend must be equal for Services sharing an address: "" under
	// externalTrafficPolicy Cluster, the selector under Local, because one
	// node announces the address and it must have endpoints of all of them.
	backend string
	ports   []portKey
	current []netip.Addr
}

func firstAnnotation(svc *v1.Service, keys []string) string {
	for _, k := range keys {
		if v := strings.TrimSpace(svc.Annotations[k]); v != "" {
			return v
		}
	}
	return ""
}

func newRequest(svc *v1.Service, nsLabels map[string]string) *request {
	r := &request{
		key:     types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		created: svc.CreationTimestamp.Time,
		nsLabel: nsLabels,
		labels:  svc.Labels,
		pool:    firstAnnotation(svc, annotationsPool),
		sharing: firstAnnotation(svc, annotationsSharing),
		current: ingressIPs(svc),
	}
	if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		r.backend = labels.Set(svc.Spec.Selector).String()
	}
	for _, p := range svc.Spec.Ports {
		r.ports = append(r.ports, portKey{cmp.Or(p.Protocol, v1.ProtocolTCP), p.Port})
	}
	want := firstAnnotation(svc, annotationsIPs)
	if want == "" {
		want = strings.TrimSpace(svc.Spec.LoadBalancerIP)
	}
	if want != "" {
		var v4 []netip.Addr
		for _, f := range strings.Split(want, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(f))
			switch {
			case err != nil:
				r.requestErr = fmt.Sprintf("requested address %q is not an IP address", strings.TrimSpace(f))
			case !a.Is4():
				r.requestErr = fmt.Sprintf("requested address %s is not IPv4; knet's LoadBalancer addresses are IPv4-only", a)
			default:
				v4 = append(v4, a)
			}
		}
		if r.requestErr == "" && len(v4) != 1 {
			r.requestErr = fmt.Sprintf("requested %q: give exactly one IPv4 address", want)
		}
		if r.requestErr == "" {
			r.requested = v4[0]
		}
	}
	return r
}

// ingressIPs are the valid IPv4 addresses in status.loadBalancer.ingress.
func ingressIPs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && a.Is4() {
			out = append(out, a)
		}
	}
	return out
}

type allocator struct {
	pools []*Pool
	users map[netip.Addr][]*request
	full  map[*Pool]bool
}

func (al *allocator) poolOf(a netip.Addr) *Pool {
	for _, p := range al.pools {
		if p.Contains(a) {
			return p
		}
	}
	return nil
}

// conflict says why r cannot use a, "" if it can. Following MetalLB,
// Services share an address only with the same sharing key, the same
// backend key and no common port.
func (al *allocator) conflict(a netip.Addr, r *request) string {
	for _, u := range al.users[a] {
		if u.key == r.key {
			continue
		}
		switch {
		case r.sharing == "" || u.sharing != r.sharing:
			return fmt.Sprintf("%s is used by Service %s; to share it, give both the same allow-shared-ip annotation", a, u.key)
		case u.backend != r.backend:
			return fmt.Sprintf("%s is shared with Service %s, whose externalTrafficPolicy or (under Local) selector differs", a, u.key)
		}
		for _, p := range r.ports {
			if slices.Contains(u.ports, p) {
				return fmt.Sprintf("%s is shared with Service %s, which also uses port %d/%s", a, u.key, p.port, p.proto)
			}
		}
	}
	return ""
}

func (al *allocator) take(a netip.Addr, r *request) {
	al.users[a] = append(al.users[a], r)
}

// usable reports whether pool p may serve r at all.
func usable(p *Pool, r *request) bool {
	return p.allows(r.key.Namespace, r.nsLabel, r.labels) && (r.pool == "" || r.pool == p.Name)
}

// keep returns the current address r may keep, if any.
func (al *allocator) keep(r *request) (netip.Addr, *Pool) {
	for _, a := range r.current {
		p := al.poolOf(a)
		if p == nil || !usable(p, r) || (r.requested.IsValid() && a != r.requested) {
			continue
		}
		if al.conflict(a, r) == "" {
			return a, p
		}
	}
	return netip.Addr{}, nil
}

// pick finds a new address for r, or explains why there is none.
func (al *allocator) pick(r *request) (netip.Addr, *Pool, *Problem) {
	problem := func(reason, format string, args ...any) (netip.Addr, *Pool, *Problem) {
		return netip.Addr{}, nil, &Problem{Service: r.key, Reason: reason, Message: fmt.Sprintf(format, args...) + "; the Service stays pending"}
	}
	if r.requestErr != "" {
		return problem("InvalidLoadBalancerIP", "%s", r.requestErr)
	}
	if r.requested.IsValid() {
		p := al.poolOf(r.requested)
		switch {
		case p == nil:
			return problem("LoadBalancerIPNotInPool", "requested address %s is outside every valid IPAddressPool; add it to a pool", r.requested)
		case !usable(p, r):
			return problem("LoadBalancerIPNotAllowed", "requested address %s is in pool %q, whose serviceAllocation (or the address-pool annotation) excludes this Service", r.requested, p.Name)
		}
		if why := al.conflict(r.requested, r); why != "" {
			return problem("LoadBalancerIPInUse", "requested address %s", why)
		}
		return r.requested, p, nil
	}
	var candidates []*Pool
	for _, p := range al.pools {
		// A pool named by annotation is used even without autoAssign, as in MetalLB.
		if usable(p, r) && (p.AutoAssign || r.pool != "") {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		if r.pool != "" {
			return problem("NoMatchingPool", "address-pool %q does not exist, is invalid, or its serviceAllocation excludes this Service", r.pool)
		}
		return problem("NoMatchingPool", "no valid IPAddressPool with autoAssign admits this Service (check serviceAllocation namespaces and selectors)")
	}
	for _, p := range candidates {
		if r.sharing != "" {
			// Prefer joining an address already shared under the same key.
			var shared []netip.Addr
			for a, us := range al.users {
				if len(us) > 0 && p.Contains(a) {
					shared = append(shared, a)
				}
			}
			slices.SortFunc(shared, netip.Addr.Compare)
			for _, a := range shared {
				if al.users[a][0].sharing == r.sharing && al.conflict(a, r) == "" {
					return a, p, nil
				}
			}
		}
		if a, ok := al.free(p); ok {
			return a, p, nil
		}
	}
	names := make([]string, len(candidates))
	for i, p := range candidates {
		names[i] = p.Name
	}
	return problem("PoolExhausted", "no free address in pool(s) %s; add addresses or delete unused LoadBalancer Services", strings.Join(names, ", "))
}

// free returns the lowest unused address of p. Allocation only adds users
// within one run, so a pool found full stays full and is not scanned again.
func (al *allocator) free(p *Pool) (netip.Addr, bool) {
	if al.full[p] {
		return netip.Addr{}, false
	}
	for _, rg := range p.ranges {
		for a := rg.first; ; a = a.Next() {
			if !(p.AvoidBuggyIPs && isBuggy(a)) && len(al.users[a]) == 0 {
				return a, true
			}
			if a == rg.last {
				break
			}
		}
	}
	al.full[p] = true
	return netip.Addr{}, false
}

// Allocate computes the address of every handled Service. It is a pure
// function of its inputs. Addresses already in status are kept while they
// stay valid (in a usable pool, matching the request, not conflicting with
// an older Service), so a restart or resync moves nothing; older Services
// (by creationTimestamp, then namespace/name) win conflicts.
func Allocate(in Inputs) Result {
	res := Result{Desired: map[types.NamespacedName]Allocation{}}
	al := &allocator{pools: in.Pools, users: map[netip.Addr][]*request{}, full: map[*Pool]bool{}}
	var reqs []*request
	for _, svc := range in.Services {
		if Handled(svc) {
			reqs = append(reqs, newRequest(svc, in.NamespaceLabels[svc.Namespace]))
			continue
		}
		if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
			// The type changed away from LoadBalancer: release our address.
			for _, a := range ingressIPs(svc) {
				if al.poolOf(a) != nil {
					res.Desired[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}] = Allocation{}
					break
				}
			}
		}
	}
	slices.SortFunc(reqs, func(a, b *request) int {
		return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.key.Namespace, b.key.Namespace), cmp.Compare(a.key.Name, b.key.Name))
	})
	var pending []*request
	for _, r := range reqs {
		if a, p := al.keep(r); p != nil {
			al.take(a, r)
			res.Desired[r.key] = Allocation{IP: a, Pool: p.Name}
			if r.requestErr != "" {
				res.Problems = append(res.Problems, Problem{Service: r.key, Reason: "InvalidLoadBalancerIP", Message: r.requestErr + "; keeping " + a.String()})
			}
			continue
		}
		pending = append(pending, r)
	}
	for _, r := range pending {
		a, p, prob := al.pick(r)
		if prob != nil {
			res.Problems = append(res.Problems, *prob)
			res.Desired[r.key] = Allocation{}
			continue
		}
		al.take(a, r)
		res.Desired[r.key] = Allocation{IP: a, Pool: p.Name}
	}
	return res
}
