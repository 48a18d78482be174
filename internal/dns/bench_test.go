package dns

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// benchCluster is 1000 Services with 3 endpoints each, plus the fixtures.
func benchCluster() []runtime.Object {
	objs := clusterObjects()
	for i := range 1000 {
		name := fmt.Sprintf("svc%d", i)
		objs = append(objs,
			service("bench", name, fmt.Sprintf("10.97.%d.%d", i/250, i%250+1), withPort("http", v1.ProtocolTCP, 80)),
			endpointSlice("bench", name, name+"-1", discoveryv1.AddressTypeIPv4, []slicePort{{"http", v1.ProtocolTCP, 8080}},
				ep{ip: fmt.Sprintf("10.244.%d.%d", i/80, i%80*3+1)}, ep{ip: fmt.Sprintf("10.244.%d.%d", i/80, i%80*3+2)}, ep{ip: fmt.Sprintf("10.244.%d.%d", i/80, i%80*3+3)}))
	}
	return objs
}

// BenchmarkHandle measures one answer on the socket path (fast path from
// the packed cache, as a steady-state server runs) and through Handle
// (miekg/dns messages, the path of a cache miss).
func BenchmarkHandle(b *testing.B) {
	s := newTestServer(b, Config{}, benchCluster()...)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"svc500.bench.svc.cluster.local.", dns.TypeA},
		{"_http._tcp.svc500.bench.svc.cluster.local.", dns.TypeSRV},
		{"nope.bench.svc.cluster.local.", dns.TypeA},
	} {
		label := dns.TypeToString[q.qtype] + "/" + q.name
		req := query(q.name, q.qtype)
		req.SetEdns0(1232, false)
		raw, _ := req.Pack()
		b.Run("wire/"+label, func(b *testing.B) {
			out := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := s.serveWire(raw, out, true, false)
				if err != nil || len(resp) < 12 {
					b.Fatal(err)
				}
			}
		})
		b.Run("msg/"+label, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if m := s.Handle(req); m == nil {
					b.Fatal("no answer")
				}
			}
		})
	}
}

// BenchmarkSnapshotBuild measures a full rebuild after an API change.
func BenchmarkSnapshotBuild(b *testing.B) {
	nss, svcs, slices := split(benchCluster())
	b.ReportAllocs()
	for b.Loop() {
		buildSnapshot("cluster.local.", 5, 1, 1, nss, svcs, slices)
	}
}
