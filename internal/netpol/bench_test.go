package netpol

import (
	"knet/internal/netnsrun"

	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"
)

// scaleCluster is 10 namespaces of 30 pods (half on node-1) and nPolicies
// policies: policy i lives in namespace (i/10)%10 and selects app i%10 there
// (so every app of every namespace is selected by nPolicies/100 policies),
// admits two apps of its namespace on TCP 80 and the named port "http", and
// app9 of a team's namespaces on every port.
func scaleCluster(nPolicies int) ([]*networkingv1.NetworkPolicy, []*v1.Pod, []*v1.Namespace) {
	var nss []*v1.Namespace
	var pods []*v1.Pod
	for n := range 10 {
		ns := fmt.Sprintf("ns%d", n)
		nss = append(nss, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"kubernetes.io/metadata.name": ns, "team": fmt.Sprint(n % 3)}}})
		for p := range 30 {
			node := "node-1"
			if p%2 == 1 {
				node = "node-2"
			}
			pods = append(pods, &v1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", p), Labels: map[string]string{"app": fmt.Sprintf("app%d", p%10)}},
				Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Ports: []v1.ContainerPort{{Name: "http", ContainerPort: int32(8000 + p%10)}}}}},
				Status:     v1.PodStatus{Phase: v1.PodRunning, PodIP: netip.AddrFrom4([4]byte{10, 244, byte(n), byte(10 + p)}).String()},
			})
		}
	}
	tcp := v1.ProtocolTCP
	var policies []*networkingv1.NetworkPolicy
	for i := range nPolicies {
		ns := fmt.Sprintf("ns%d", (i/10)%10)
		policies = append(policies, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("np%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%10)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{
					{
						From: []networkingv1.NetworkPolicyPeer{
							{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (i+3)%10)}}},
							{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (i/100)%10)}}},
						},
						Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(80))}, {Protocol: &tcp, Port: ptr.To(intstr.FromString("http"))}},
					},
					{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint(i % 3)}}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app9"}}}}},
				},
			},
		})
	}
	return policies, pods, nss
}

// BenchmarkCompileRender: the pure part of a full sync, 1000 policies over
// 300 pods, as a node agent computes it on every change.
func BenchmarkCompileRender(b *testing.B) {
	policies, pods, nss := scaleCluster(1000)
	var st *State
	var r *ruleset
	for b.Loop() {
		st = Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: "node-1", AlwaysAllowed: fixtureNodeIPs["node-1"]})
		r = render(st)
	}
	elems := 0
	for _, s := range r.sets {
		elems += len(s.elems)
	}
	b.ReportMetric(float64(len(st.Groups)), "groups")
	b.ReportMetric(float64(elems), "elements")
}

// BenchmarkPlanNoChange is the cost of a resync that finds nothing to do.
func BenchmarkPlanNoChange(b *testing.B) {
	policies, pods, nss := scaleCluster(1000)
	r := render(Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: "node-1"}))
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	for b.Loop() {
		tx := nft.NewTransaction()
		plan(tx, r, r)
		if tx.NumOperations() != 0 {
			b.Fatal("no-op plan has operations")
		}
	}
}

// BenchmarkPrivilegedConnections: TCP connections per second from one pod
// to another through the real table, with no policy and with 1000
// policies (the destination isolated by 100 of them, the client allowed).
func BenchmarkPrivilegedConnections(b *testing.B) {
	privileged(b)
	for _, nPol := range []int{0, 1000} {
		b.Run(fmt.Sprintf("policies=%d", nPol), func(b *testing.B) {
			policies, pods, nss := scaleCluster(nPol)
			// Server: ns0/p0 (app0, 10.244.0.10), selected by np0, np100, ...,
			// np900; client: ns0/p10 (app0), which np0 admits on TCP 80.
			const server, client = "10.244.0.10", "10.244.0.20"
			n := newTestNode(b, server, client)
			n.serve(b, server, "80")
			var inner knftables.Interface
			if err := netnsrun.Run(n.node, func() (err error) { inner, err = knftables.New(knftables.IPv4Family, TableName); return err }); err != nil {
				b.Fatal(err)
			}
			nft := &nsNFT{ns: n.node, inner: inner}
			st := Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: "node-1", AlwaysAllowed: []netip.Addr{netip.MustParseAddr("10.244.1.1")}})
			if nPol > 0 && st.Ingress[netip.MustParseAddr(server)] == "" {
				b.Fatal("server is not isolated; the benchmark would measure nothing")
			}
			tx := nft.NewTransaction()
			plan(tx, nil, render(st))
			start := time.Now()
			if err := nft.Run(context.Background(), tx); err != nil {
				b.Fatal(err)
			}
			b.Logf("full apply of %d operations: %v", tx.NumOperations(), time.Since(start))
			b.ResetTimer()
			for b.Loop() {
				if !dial(n.pods[client], server+":80", time.Second) {
					b.Fatal("connection blocked")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conn/s")
		})
	}
}
