package lbipam

import (
	"fmt"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestElectOwnerIsDeterministicAndSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	count := map[string]int{}
	for i := 1; i <= 60; i++ {
		ip := netip.AddrFrom4([4]byte{172, 18, 255, byte(190 + i)})
		o := ElectOwner(ip, nodes)
		if r := ElectOwner(ip, []string{"n3", "n1", "n2"}); r != o {
			t.Fatalf("%s: owner depends on input order: %s vs %s", ip, o, r)
		}
		count[o]++
		// Removing a node that does not own ip must not move ip.
		for _, gone := range nodes {
			if gone == o {
				continue
			}
			var rest []string
			for _, n := range nodes {
				if n != gone {
					rest = append(rest, n)
				}
			}
			if r := ElectOwner(ip, rest); r != o {
				t.Errorf("%s moved from %s to %s when %s left", ip, o, r, gone)
			}
		}
	}
	for _, n := range nodes {
		if count[n] < 5 {
			t.Errorf("addresses do not spread: %v", count)
		}
	}
	if ElectOwner(netip.MustParseAddr("10.0.0.1"), nil) != "" {
		t.Error("owner without eligible nodes")
	}
}

func node(name string, ready bool, lbls map[string]string) *v1.Node {
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Status: v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: st}}}}
}

func slice(svc string, readyOn map[string]bool) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: svc + "-x", Labels: map[string]string{discovery.LabelServiceName: svc}}}
	for n, ready := range readyOn {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{NodeName: &n, Conditions: discovery.EndpointConditions{Ready: &ready}})
	}
	return s
}

func TestOwners(t *testing.T) {
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	nodes := []*v1.Node{
		node("n1", true, nil), node("n2", true, nil), node("n3", true, nil),
		node("notready", false, nil), node("excluded", true, map[string]string{labelExcludeLB: ""}),
	}
	allAlive := map[string]bool{"n1": true, "n2": true, "n3": true, "notready": true, "excluded": true}
	cluster := lbSvc("a/cluster", 0, status("10.0.0.1"))
	localSvc := lbSvc("a/local", 0, status("10.0.0.2"), local)
	pending := lbSvc("a/pending", 0)
	foreign := lbSvc("a/foreign", 0, status("10.0.0.3"), lbClass("example.com/lb"))
	in := announceInputs{
		Services:       []*v1.Service{cluster, localSvc, pending, foreign},
		EndpointSlices: []*discovery.EndpointSlice{slice("local", map[string]bool{"n2": true, "n3": false})},
		Nodes:          nodes,
		Alive:          allAlive,
	}
	got := owners(in)
	want := map[netip.Addr]string{
		ip("10.0.0.1"): ElectOwner(ip("10.0.0.1"), []string{"n1", "n2", "n3"}),
		ip("10.0.0.2"): "n2", // only n2 has a ready endpoint
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("owners = %v, want %v", got, want)
	}

	// The owner of the Cluster address goes silent: another member takes it.
	dead := got[ip("10.0.0.1")]
	alive := map[string]bool{}
	for n := range allAlive {
		alive[n] = n != dead
	}
	in.Alive = alive
	got = owners(in)
	if o := got[ip("10.0.0.1")]; o == dead || o == "" || o == "notready" || o == "excluded" {
		t.Errorf("after %s went silent the owner is %q", dead, o)
	}

	// The only node with a local endpoint goes silent: nobody announces.
	in.Alive = map[string]bool{"n1": true, "n3": true}
	if o, ok := owners(in)[ip("10.0.0.2")]; ok {
		t.Errorf("Local address announced by %s without a ready local endpoint", o)
	}
}
func TestGainedDetectsARejoiningPeer(t *testing.T) {
	before := map[string]bool{"n1": true}
	if !gained(before, map[string]bool{"n1": true, "n2": true}) {
		t.Error("n2 came back, not detected: the owner would not re-announce its addresses")
	}
	if gained(map[string]bool{"n1": true, "n2": true}, before) {
		t.Error("a peer leaving counted as a peer joining")
	}
}
