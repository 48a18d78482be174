package lbipam

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

type svcOpt func(*v1.Service)

// lbSvc is a LoadBalancer Service "ns/name" created age seconds after epoch
// with one TCP port 80 unless ports() says otherwise.
func lbSvc(key string, age int, opts ...svcOpt) *v1.Service {
	ns, name, _ := strings.Cut(key, "/")
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second)), Annotations: map[string]string{}},
		Spec: v1.ServiceSpec{
			Type:                  v1.ServiceTypeLoadBalancer,
			Selector:              map[string]string{"app": name},
			Ports:                 []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster,
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func status(ips ...string) svcOpt {
	return func(s *v1.Service) {
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}
func annotate(k, v string) svcOpt { return func(s *v1.Service) { s.Annotations[k] = v } }
func shared(key string) svcOpt    { return annotate("metallb.universe.tf/allow-shared-ip", key) }
func ports(ps ...int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Ports = nil
		for _, p := range ps {
			s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Port: p, Protocol: v1.ProtocolTCP})
		}
	}
}
func udp(s *v1.Service) {
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].Protocol = v1.ProtocolUDP
	}
}
func local(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal }
func selector(app string) svcOpt {
	return func(s *v1.Service) { s.Spec.Selector = map[string]string{"app": app} }
}
func clusterIPType(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }
func lbClass(c string) svcOpt     { return func(s *v1.Service) { s.Spec.LoadBalancerClass = &c } }
func svcLabel(k, v string) svcOpt { return func(s *v1.Service) { s.Labels = map[string]string{k: v} } }
func legacyIP(ip string) svcOpt   { return func(s *v1.Service) { s.Spec.LoadBalancerIP = ip } }
func boolPtr(b bool) *bool        { return &b }
func srcPool(name string, age int, spec IPAddressPoolSpec) PoolSource {
	return PoolSource{Name: name, Created: epoch.Add(time.Duration(age) * time.Second), Spec: spec}
}

func TestAllocate(t *testing.T) {
	small := srcPool("small", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.1-10.0.0.2"}})
	tests := []struct {
		name     string
		builtIn  []string
		pools    []PoolSource
		services []*v1.Service
		nsLabels map[string]map[string]string
		// want: Service → address ("" = pending or released); Services
		// not listed must not be in Desired at all.
		want map[string]string
		// problems: Service → reason.
		problems map[string]string
	}{
		{
			name:     "lowest free address of the built-in pool, never .255",
			builtIn:  []string{"172.18.255.253-172.18.255.255"},
			services: []*v1.Service{lbSvc("a/one", 0), lbSvc("a/two", 1), lbSvc("a/three", 2)},
			want:     map[string]string{"a/one": "172.18.255.253", "a/two": "172.18.255.254", "a/three": ""},
			problems: map[string]string{"a/three": "PoolExhausted"},
		},
		{
			name:     "existing status is kept although a lower address is free",
			pools:    []PoolSource{small},
			services: []*v1.Service{lbSvc("a/one", 0, status("10.0.0.2")), lbSvc("a/two", 1)},
			want:     map[string]string{"a/one": "10.0.0.2", "a/two": "10.0.0.1"},
		},
		{
			name:     "exhaustion: the older Service wins, the younger stays pending",
			pools:    []PoolSource{srcPool("one", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.7/32"}})},
			services: []*v1.Service{lbSvc("a/young", 5), lbSvc("a/old", 1)},
			want:     map[string]string{"a/old": "10.0.0.7", "a/young": ""},
			problems: map[string]string{"a/young": "PoolExhausted"},
		},
		{
			name:  "requested addresses: knet annotation over MetalLB's, then spec.loadBalancerIP",
			pools: []PoolSource{srcPool("p", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.0/28"}})},
			services: []*v1.Service{
				lbSvc("a/metallb", 0, annotate("metallb.universe.tf/loadBalancerIPs", "10.0.0.9")),
				lbSvc("a/both", 1, annotate("metallb.universe.tf/loadBalancerIPs", "10.0.0.3"), annotate("knet.dev/loadBalancerIPs", "10.0.0.4")),
				lbSvc("a/legacy", 2, legacyIP("10.0.0.12")),
			},
			want: map[string]string{"a/metallb": "10.0.0.9", "a/both": "10.0.0.4", "a/legacy": "10.0.0.12"},
		},
		{
			name:  "requested address outside every pool, IPv6 or malformed: pending with a reason",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/outside", 0, annotate("knet.dev/loadBalancerIPs", "192.168.1.1")),
				lbSvc("a/v6", 1, annotate("knet.dev/loadBalancerIPs", "fd00::1")),
				lbSvc("a/junk", 2, legacyIP("10.0.0")),
				lbSvc("a/two", 3, annotate("knet.dev/loadBalancerIPs", "10.0.0.1,10.0.0.2")),
			},
			want:     map[string]string{"a/outside": "", "a/v6": "", "a/junk": "", "a/two": ""},
			problems: map[string]string{"a/outside": "LoadBalancerIPNotInPool", "a/v6": "InvalidLoadBalancerIP", "a/junk": "InvalidLoadBalancerIP", "a/two": "InvalidLoadBalancerIP"},
		},
		{
			name:  "a changed request moves the Service to the requested address",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/one", 0, status("10.0.0.1"), annotate("knet.dev/loadBalancerIPs", "10.0.0.2")),
			},
			want: map[string]string{"a/one": "10.0.0.2"},
		},
		{
			name:  "requested address taken by a Service without a sharing key",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/holder", 0, status("10.0.0.1")),
				lbSvc("a/wants", 1, annotate("knet.dev/loadBalancerIPs", "10.0.0.1"), ports(443)),
			},
			want:     map[string]string{"a/holder": "10.0.0.1", "a/wants": ""},
			problems: map[string]string{"a/wants": "LoadBalancerIPInUse"},
		},
		{
			name:  "sharing: same key and disjoint ports share; a common port gets its own address",
			pools: []PoolSource{srcPool("p", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.1-10.0.0.3"}})},
			services: []*v1.Service{
				lbSvc("a/web", 0, shared("k"), ports(80)),
				lbSvc("a/tls", 1, shared("k"), ports(443)),
				lbSvc("a/dns", 2, shared("k"), ports(80), udp), // 80/UDP does not collide with 80/TCP
				lbSvc("a/web2", 3, shared("k"), ports(80)),
				lbSvc("a/other", 4, shared("other"), ports(8443)),
			},
			want: map[string]string{"a/web": "10.0.0.1", "a/tls": "10.0.0.1", "a/dns": "10.0.0.1", "a/web2": "10.0.0.2", "a/other": "10.0.0.3"},
		},
		{
			name:  "sharing under externalTrafficPolicy Local needs the same selector; Cluster and Local never share",
			pools: []PoolSource{srcPool("p", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.1-10.0.0.4"}})},
			services: []*v1.Service{
				lbSvc("a/l1", 0, shared("k"), local, selector("x"), ports(1)),
				lbSvc("a/l2", 1, shared("k"), local, selector("x"), ports(2)),
				lbSvc("a/l3", 2, shared("k"), local, selector("y"), ports(3)),
				lbSvc("a/c", 3, shared("k"), ports(4)),
			},
			want: map[string]string{"a/l1": "10.0.0.1", "a/l2": "10.0.0.1", "a/l3": "10.0.0.2", "a/c": "10.0.0.3"},
		},
		{
			name:  "sharing with a requested address; a conflicting requester stays pending",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/one", 0, shared("k"), ports(80), annotate("knet.dev/loadBalancerIPs", "10.0.0.2")),
				lbSvc("b/two", 1, shared("k"), ports(81), annotate("knet.dev/allow-shared-ip", "k"), annotate("knet.dev/loadBalancerIPs", "10.0.0.2")),
				lbSvc("b/three", 2, shared("k"), ports(80), annotate("knet.dev/loadBalancerIPs", "10.0.0.2")),
			},
			want:     map[string]string{"a/one": "10.0.0.2", "b/two": "10.0.0.2", "b/three": ""},
			problems: map[string]string{"b/three": "LoadBalancerIPInUse"},
		},
		{
			name:  "two Services claiming one address in status without sharing: the older keeps it",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/young", 9, status("10.0.0.1")),
				lbSvc("a/old", 1, status("10.0.0.1")),
			},
			want: map[string]string{"a/old": "10.0.0.1", "a/young": "10.0.0.2"},
		},
		{
			name:  "release: type changed away from LoadBalancer; address outside all pools is reallocated",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/now-clusterip", 0, status("10.0.0.1"), clusterIPType),
				lbSvc("a/stale", 1, status("10.9.9.9")),
				lbSvc("a/plain-clusterip", 2, clusterIPType),
			},
			want: map[string]string{"a/now-clusterip": "", "a/stale": "10.0.0.1"},
		},
		{
			name:  "loadBalancerClass: nil and knet.dev/lb are handled, others untouched",
			pools: []PoolSource{small},
			services: []*v1.Service{
				lbSvc("a/other", 0, lbClass("example.com/lb"), status("10.0.0.1")),
				lbSvc("a/knet", 1, lbClass("knet.dev/lb")),
				lbSvc("a/none", 2),
			},
			want: map[string]string{"a/knet": "10.0.0.1", "a/none": "10.0.0.2"},
		},
		{
			name: "pool selection: priority first, then name; pools restricted by namespace and selectors",
			pools: []PoolSource{
				srcPool("zz-general", 0, IPAddressPoolSpec{Addresses: []string{"10.1.0.1/32"}}),
				srcPool("aa-general", 1, IPAddressPoolSpec{Addresses: []string{"10.2.0.1/32"}}),
				srcPool("prio2", 2, IPAddressPoolSpec{Addresses: []string{"10.3.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Priority: 2}}),
				srcPool("team-a", 3, IPAddressPoolSpec{Addresses: []string{"10.4.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Priority: 1, Namespaces: []string{"team-a"}}}),
				srcPool("prod", 4, IPAddressPoolSpec{Addresses: []string{"10.5.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Priority: 1,
					NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}}}}),
				srcPool("public", 5, IPAddressPoolSpec{Addresses: []string{"10.6.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Priority: 1,
					ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"exposure": "public"}}}}}),
			},
			nsLabels: map[string]map[string]string{"shop": {"env": "prod"}},
			services: []*v1.Service{
				lbSvc("team-a/svc", 0),
				lbSvc("shop/svc", 1),
				lbSvc("x/public", 2, svcLabel("exposure", "public")),
				lbSvc("x/first", 3),
				lbSvc("x/second", 4),
				lbSvc("x/third", 5),
				lbSvc("x/fourth", 6),
			},
			want: map[string]string{"team-a/svc": "10.4.0.1", "shop/svc": "10.5.0.1", "x/public": "10.6.0.1",
				"x/first": "10.3.0.1", "x/second": "10.2.0.1", "x/third": "10.1.0.1", "x/fourth": ""},
			problems: map[string]string{"x/fourth": "PoolExhausted"},
		},
		{
			name: "autoAssign false: only by address-pool annotation or requested address; restricted pool refuses requests from other namespaces",
			pools: []PoolSource{
				srcPool("manual", 0, IPAddressPoolSpec{Addresses: []string{"10.7.0.1-10.7.0.2"}, AutoAssign: boolPtr(false)}),
				srcPool("team-a", 1, IPAddressPoolSpec{Addresses: []string{"10.8.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Namespaces: []string{"team-a"}}}),
			},
			services: []*v1.Service{
				lbSvc("x/auto", 0),
				lbSvc("x/named", 1, annotate("metallb.universe.tf/address-pool", "manual")),
				lbSvc("x/asked", 2, annotate("knet.dev/loadBalancerIPs", "10.7.0.2")),
				lbSvc("x/trespass", 3, annotate("knet.dev/loadBalancerIPs", "10.8.0.1")),
				lbSvc("x/nosuchpool", 4, annotate("knet.dev/address-pool", "nope")),
			},
			want:     map[string]string{"x/auto": "", "x/named": "10.7.0.1", "x/asked": "10.7.0.2", "x/trespass": "", "x/nosuchpool": ""},
			problems: map[string]string{"x/auto": "NoMatchingPool", "x/trespass": "LoadBalancerIPNotAllowed", "x/nosuchpool": "NoMatchingPool"},
		},
		{
			name:     "avoidBuggyIPs skips .0 and .255",
			pools:    []PoolSource{srcPool("p", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.255-10.0.1.1"}, AvoidBuggyIPs: true})},
			services: []*v1.Service{lbSvc("a/one", 0), lbSvc("a/two", 1, status("10.0.1.0"))},
			want:     map[string]string{"a/one": "10.0.1.1", "a/two": ""},
			problems: map[string]string{"a/two": "PoolExhausted"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pools, poolProblems, err := BuildPools(tc.builtIn, tc.pools)
			if err != nil || len(poolProblems) > 0 {
				t.Fatalf("BuildPools: %v %v", err, poolProblems)
			}
			in := Inputs{Pools: pools, Services: tc.services, NamespaceLabels: tc.nsLabels}
			res := Allocate(in)
			got := map[string]string{}
			for k, a := range res.Desired {
				got[k.String()] = ""
				if a.IP.IsValid() {
					got[k.String()] = a.IP.String()
				}
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("addresses:\n got  %v\n want %v", got, tc.want)
			}
			gotProblems := map[string]string{}
			for _, p := range res.Problems {
				gotProblems[p.Service.String()] = p.Reason
				if !strings.Contains(p.Message, "pending") && !strings.Contains(p.Message, "keeping") {
					t.Errorf("problem message %q does not say what happens to the Service", p.Message)
				}
			}
			if tc.problems == nil {
				tc.problems = map[string]string{}
			}
			if !maps.Equal(gotProblems, tc.problems) {
				t.Errorf("problems:\n got  %v\n want %v (%v)", gotProblems, tc.problems, res.Problems)
			}

			// Writing the result to status and allocating again must change
			// nothing: a resync or controller restart moves no address.
			var again []*v1.Service
			for _, s := range tc.services {
				s = s.DeepCopy()
				if a, ok := res.Desired[metaKey(s)]; ok {
					s.Status.LoadBalancer.Ingress = nil
					if a.IP.IsValid() {
						s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: a.IP.String()}}
					}
				}
				again = append(again, s)
			}
			slices.Reverse(again) // input order must not matter either
			res2 := Allocate(Inputs{Pools: pools, Services: again, NamespaceLabels: tc.nsLabels})
			for k, a := range res.Desired {
				if a.IP.IsValid() && res2.Desired[k].IP != a.IP {
					t.Errorf("second allocation moved %s from %s to %s", k, a.IP, res2.Desired[k].IP)
				}
			}
		})
	}
}

func metaKey(s *v1.Service) types.NamespacedName {
	return types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
}

func TestAllocateManyServicesOverTwoPools(t *testing.T) {
	// 200 Services: one fills the priority pool, the rest get distinct
	// addresses from a /12.
	pools, _, err := BuildPools(nil, []PoolSource{
		srcPool("full", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.1/32"}, ServiceAllocation: &ServiceAllocationSpec{Priority: 1}}),
		srcPool("big", 1, IPAddressPoolSpec{Addresses: []string{"10.16.0.0/12"}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var svcs []*v1.Service
	for i := range 200 {
		svcs = append(svcs, lbSvc("a/s"+strings.Repeat("x", i), i))
	}
	res := Allocate(Inputs{Pools: pools, Services: svcs})
	seen := map[netip.Addr]bool{}
	for k, a := range res.Desired {
		if !a.IP.IsValid() || seen[a.IP] {
			t.Fatalf("%s got %v (duplicate or none)", k, a.IP)
		}
		seen[a.IP] = true
	}
	if len(res.Problems) != 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
}
