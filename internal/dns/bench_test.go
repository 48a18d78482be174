package dns

import (
	"fmt"
	goruntime "runtime"
	"testing"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
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

// scaleObjects is the cluster of the scaling benchmarks, slimmed as the
// informers store it: 10k Services in one namespace with one EndpointSlice
// of 10 endpoints each, and 100 small namespaces of 3 Services with 2
// endpoints, plus the fixtures.
func scaleObjects() []runtime.Object {
	objs := clusterObjects()
	add := func(ns, name, ip string, eps int, base int) {
		var list []ep
		for j := range eps {
			n := base + j
			list = append(list, ep{ip: fmt.Sprintf("10.%d.%d.%d", 128+n>>16, n>>8&255, n&255)})
		}
		objs = append(objs,
			service(ns, name, ip, withPort("http", v1.ProtocolTCP, 80)),
			endpointSlice(ns, name, name+"-abcde", discoveryv1.AddressTypeIPv4, []slicePort{{"http", v1.ProtocolTCP, 8080}}, list...))
	}
	objs = append(objs, namespace("big"))
	for i := range 10000 {
		add("big", fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.100.%d.%d", i>>8, i&255), 10, i*10)
	}
	for n := range 100 {
		ns := fmt.Sprintf("team-%d", n)
		objs = append(objs, namespace(ns))
		for i := range 3 {
			k := n*3 + i
			add(ns, fmt.Sprintf("app-%d", i), fmt.Sprintf("10.101.%d.%d", k>>8, k&255), 2, 200000+k*2)
		}
	}
	for i, o := range objs {
		slim, _ := slimObject(o)
		objs[i] = slim.(runtime.Object)
	}
	return objs
}

// scaleStores holds objects as the three informers' caches do.
type scaleStores struct {
	namespaces, services, slices cache.Indexer
}

func newScaleStores(b *testing.B, objs []runtime.Object) scaleStores {
	st := scaleStores{
		namespaces: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		services:   cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		slices:     cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
	}
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *v1.Namespace:
			err = st.namespaces.Add(o)
		case *v1.Service:
			err = st.services.Add(o)
		case *discoveryv1.EndpointSlice:
			err = st.slices.Add(o)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	return st
}

func storeList[T any](st cache.Store) []T {
	objs := st.List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(T))
	}
	return out
}

// sync is what the server does after the informers delivered a change:
// rebuild the snapshot from the caches.
func (st scaleStores) sync(s *Server) {
	s.setSnapshot(storeList[*v1.Namespace](st.namespaces), storeList[*v1.Service](st.services), storeList[*discoveryv1.EndpointSlice](st.slices))
}

// BenchmarkScaleUpdate measures what one API event costs the server in a
// cluster of 10k Services (scaleObjects): a Service added, and one
// EndpointSlice of a 10-endpoint Service updated (an endpoint flips
// ready), each followed by the update that makes it visible to queries.
// Run with -benchtime=Nx for a fixed N: every Service add stays.
func BenchmarkScaleUpdate(b *testing.B) {
	s := newTestServer(b, Config{})
	st := newScaleStores(b, scaleObjects())
	st.sync(s)
	b.Run("ServiceAdd", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			svc, _ := slimObject(service("big", fmt.Sprintf("new-%d", i), fmt.Sprintf("10.102.%d.%d", i>>8&255, i&255), withPort("http", v1.ProtocolTCP, 80)))
			if err := st.services.Add(svc); err != nil {
				b.Fatal(err)
			}
			st.sync(s)
		}
	})
	b.Run("EndpointSliceUpdate", func(b *testing.B) {
		obj, ok, err := st.slices.GetByKey("big/svc-5000-abcde")
		if !ok || err != nil {
			b.Fatal("no slice big/svc-5000-abcde", err)
		}
		orig := obj.(*discoveryv1.EndpointSlice)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			es := orig.DeepCopy()
			ready := i%2 == 0
			es.Endpoints[3].Conditions.Ready = &ready
			if err := st.slices.Update(es); err != nil {
				b.Fatal(err)
			}
			st.sync(s)
		}
	})
}

// BenchmarkScaleMemory reports the heap in use once the informer caches
// and the DNS view of scaleObjects are built (heap-MB), and the time of
// that first build.
func BenchmarkScaleMemory(b *testing.B) {
	objs := scaleObjects()
	var heap float64
	for b.Loop() {
		goruntime.GC()
		var before goruntime.MemStats
		goruntime.ReadMemStats(&before)
		s := newTestServer(b, Config{})
		st := newScaleStores(b, objs)
		st.sync(s)
		goruntime.GC()
		var after goruntime.MemStats
		goruntime.ReadMemStats(&after)
		heap = float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
		goruntime.KeepAlive(st)
		goruntime.KeepAlive(s)
	}
	b.ReportMetric(heap, "heap-MB")
}
