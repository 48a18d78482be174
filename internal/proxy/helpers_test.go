package proxy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

const (
	testNode = "node-a"
	testZone = "zone-a"
)

var (
	testNodeIP = netip.MustParseAddr("172.18.0.2")
	testCIDR   = netip.MustParsePrefix("10.244.0.0/16")
)

// makeService builds a ClusterIP Service with one TCP port 80 -> "http";
// tweak adjusts it.
func makeService(ns, name, clusterIP string, tweak func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1700000000, 0))},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Ports: []v1.ServicePort{{
				Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("web"),
			}},
		},
	}
	if tweak != nil {
		tweak(s)
	}
	return s
}

type ep struct {
	ip          string
	node        string
	zone        string
	notReady    bool
	terminating bool
	notServing  bool
	forNodes    []string
	forZones    []string
}

// makeSlice builds an IPv4 EndpointSlice of Service ns/svc with one port.
func makeSlice(ns, svc, sliceName, portName string, proto v1.Protocol, port int32, eps ...ep) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: sliceName,
			Labels: map[string]string{discovery.LabelServiceName: svc},
		},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	for _, e := range eps {
		ready, serving, term := !e.notReady, !e.notServing, e.terminating
		de := discovery.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term},
		}
		if e.node != "" {
			de.NodeName = &e.node
		}
		if e.zone != "" {
			de.Zone = &e.zone
		}
		if len(e.forNodes)+len(e.forZones) > 0 {
			de.Hints = &discovery.EndpointHints{}
			for _, n := range e.forNodes {
				de.Hints.ForNodes = append(de.Hints.ForNodes, discovery.ForNode{Name: n})
			}
			for _, z := range e.forZones {
				de.Hints.ForZones = append(de.Hints.ForZones, discovery.ForZone{Name: z})
			}
		}
		s.Endpoints = append(s.Endpoints, de)
	}
	return s
}

func testInputs(objs ...any) Inputs {
	in := Inputs{
		NodeName:       testNode,
		Zone:           testZone,
		NodeIPs:        []netip.Addr{testNodeIP},
		ClusterCIDR:    testCIDR,
		MasqueradeMark: 0x4000,
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.Service:
			in.Services = append(in.Services, o)
		case *discovery.EndpointSlice:
			in.EndpointSlices = append(in.EndpointSlices, o)
		default:
			panic("unexpected object")
		}
	}
	return in
}

// applyFull computes, renders and applies in as a full sync on a new Fake.
func applyFull(t testing.TB, in Inputs) (*knftables.Fake, *State) {
	t.Helper()
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	st := Compute(in)
	tx := nft.NewTransaction()
	plan(tx, nil, render(st), nil, true)
	if err := nft.Run(context.Background(), tx); err != nil {
		t.Fatalf("apply: %v\n%s", err, tx)
	}
	return nft, st
}

// serviceLines is the dump of in minus the dump of an empty cluster: the
// rules, chains, sets and elements that the Services in in add.
func serviceLines(t testing.TB, in Inputs) string {
	t.Helper()
	base, _ := applyFull(t, testInputs())
	baseLines := map[string]bool{}
	for _, l := range strings.Split(base.Dump(), "\n") {
		baseLines[l] = true
	}
	nft, _ := applyFull(t, in)
	var out []string
	for _, l := range strings.Split(nft.Dump(), "\n") {
		if !baseLines[l] {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func trimGolden(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
