package lbipam

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestBuildPoolsRejectsMalformedAndOverlapping(t *testing.T) {
	srcs := []PoolSource{
		srcPool("good", 0, IPAddressPoolSpec{Addresses: []string{"10.0.0.0/30", "10.0.1.5-10.0.1.9"}}),
		srcPool("junk", 1, IPAddressPoolSpec{Addresses: []string{"10.0.2.0/33"}}),
		srcPool("v6", 2, IPAddressPoolSpec{Addresses: []string{"fd00::/120"}}),
		srcPool("backwards", 3, IPAddressPoolSpec{Addresses: []string{"10.0.3.9-10.0.3.1"}}),
		srcPool("empty", 4, IPAddressPoolSpec{}),
		srcPool("self-overlap", 5, IPAddressPoolSpec{Addresses: []string{"10.0.4.0/30", "10.0.4.2"}}),
		srcPool("newer-overlap", 6, IPAddressPoolSpec{Addresses: []string{"10.0.1.9-10.0.1.12"}}),
		srcPool("on-builtin", 7, IPAddressPoolSpec{Addresses: []string{"172.18.255.200/32"}}),
		srcPool("bad-selector", 8, IPAddressPoolSpec{Addresses: []string{"10.0.5.0/30"}, ServiceAllocation: &ServiceAllocationSpec{
			ServiceSelectors: nil, NamespaceSelectors: nil, Priority: -1}}),
		srcPool("fine-too", 9, IPAddressPoolSpec{Addresses: []string{"10.0.6.1"}}),
		{Name: "undecodable", Err: errFake("spec is missing")},
	}
	pools, problems, err := BuildPools([]string{"172.18.255.192/26"}, srcs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	if want := []string{"fine-too", "good", DefaultPoolName}; !slices.Equal(names, want) {
		t.Errorf("valid pools %v, want %v (built-in last)", names, want)
	}
	bad := map[string]string{}
	for _, p := range problems {
		bad[p.Pool] = p.Message
	}
	for name, fragment := range map[string]string{
		"junk": "neither a CIDR", "v6": "IPv4-only", "backwards": "ends before it starts", "empty": "is empty",
		"self-overlap": "overlap", "newer-overlap": `pool "good"`, "on-builtin": `pool "default"`,
		"bad-selector": "negative", "undecodable": "spec is missing",
	} {
		if !strings.Contains(bad[name], fragment) {
			t.Errorf("problem for %s = %q, want it to mention %q", name, bad[name], fragment)
		}
	}
	if len(bad) != 9 {
		t.Errorf("got %d problems, want 9: %v", len(bad), bad)
	}
	// An overlap never disables the older pool.
	if !pools[1].Contains(netip.MustParseAddr("10.0.1.9")) {
		t.Error("older pool lost its address to the newer overlapping pool")
	}
}

type errFake string

func (e errFake) Error() string { return string(e) }

func TestBuiltInPoolSkipsBroadcast(t *testing.T) {
	pools, _, err := BuildPools([]string{"172.18.255.192/26"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := pools[0]
	for addr, want := range map[string]bool{"172.18.255.192": true, "172.18.255.254": true, "172.18.255.255": false, "172.18.255.191": false} {
		if got := p.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	if _, _, err := BuildPools([]string{"not-a-cidr"}, nil); err == nil {
		t.Error("malformed built-in pool accepted")
	}
}

func TestPoolSourceFromUnstructuredMetalLBManifest(t *testing.T) {
	// A MetalLB pool with only the apiVersion changed.
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "knet.dev/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": "first-pool", "namespace": "metallb-system"},
		"spec": map[string]any{
			"addresses":     []any{"192.168.10.0/24", "192.168.9.1-192.168.9.5"},
			"autoAssign":    false,
			"avoidBuggyIPs": true,
			"serviceAllocation": map[string]any{
				"priority":           int64(50),
				"namespaces":         []any{"namespace-a"},
				"namespaceSelectors": []any{map[string]any{"matchLabels": map[string]any{"foo": "bar"}}},
				"serviceSelectors":   []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "svc", "operator": "In", "values": []any{"s1"}}}}},
			},
		},
	}}
	src := PoolSourceFromUnstructured(u)
	if src.Err != nil {
		t.Fatal(src.Err)
	}
	p, err := buildPool(src)
	if err != nil {
		t.Fatal(err)
	}
	if p.AutoAssign || !p.AvoidBuggyIPs || p.Priority != 50 || !p.Contains(netip.MustParseAddr("192.168.9.3")) || p.Contains(netip.MustParseAddr("192.168.10.0")) {
		t.Errorf("decoded pool wrong: %+v", p)
	}
	if !p.allows("namespace-a", nil, map[string]string{"svc": "s1"}) || p.allows("namespace-a", nil, map[string]string{"svc": "s2"}) ||
		!p.allows("other", map[string]string{"foo": "bar"}, map[string]string{"svc": "s1"}) || p.allows("other", nil, map[string]string{"svc": "s1"}) {
		t.Error("serviceAllocation selectors not applied as MetalLB does")
	}
	if src := PoolSourceFromUnstructured(&unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"addresses": "10.0.0.0/8"}}}); src.Err == nil {
		t.Error("addresses as a string (not a list) decoded without error")
	}
}

func TestCRDEmbedded(t *testing.T) {
	crd, err := PoolCRD()
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Group != PoolResource.Group || crd.Spec.Names.Plural != PoolResource.Resource ||
		crd.Spec.Versions[0].Name != PoolResource.Version || crd.Spec.Scope != "Cluster" {
		t.Errorf("crd.yaml does not match PoolResource %v: %+v", PoolResource, crd.Spec)
	}
	if d := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["autoAssign"].Default; d == nil || string(d.Raw) != "true" {
		t.Errorf("autoAssign default = %v, want true", d)
	}
}
