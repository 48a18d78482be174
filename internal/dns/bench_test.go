package dns

import (
	"fmt"
	goruntime "runtime"
	"testing"
	"time"

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
// informers store it: n Services in one namespace with one EndpointSlice
// of 10 endpoints each, and 100 small namespaces of 3 Services with 2
// endpoints, plus the fixtures.
func scaleObjects(n int) []runtime.Object {
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
	for i := range n {
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

// scaleView is the server's update path over informer-like caches: a
// change goes into the cache and through the event handlers, and sync
// makes it visible to queries as watch does.
type scaleView struct {
	s *Server
	u *updater
	c *testCaches
}

func newScaleView(b *testing.B, objs []runtime.Object) scaleView {
	v := scaleView{s: newTestServer(b, Config{})}
	v.u = newUpdater(v.s.zone, v.s.cfg.TTL)
	v.c = newTestCaches(v.u)
	for _, o := range objs {
		v.c.put(b, o)
	}
	v.sync(b)
	return v
}

func (v scaleView) sync(b *testing.B) {
	changed, err := v.u.apply(v.c.caches())
	if err != nil {
		b.Fatal(err)
	}
	if changed {
		v.s.snap.Store(v.u.snapshot(v.s.gens.Add(1), uint32(time.Now().Unix())))
	}
}

func storeList[T any](st cache.Store) []T {
	objs := st.List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(T))
	}
	return out
}

// BenchmarkScaleUpdate measures what one API event costs the server in a
// cluster of 1k and 10k Services (scaleObjects): a Service added, and one
// EndpointSlice of a 10-endpoint Service updated (an endpoint flips
// ready), each followed by the update that makes it visible to queries.
// Run with -benchtime=Nx for a fixed N: every Service add stays.
func BenchmarkScaleUpdate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchScaleUpdate(b, n) })
	}
}

func benchScaleUpdate(b *testing.B, n int) {
	v := newScaleView(b, scaleObjects(n))
	b.Run("ServiceAdd", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			svc, _ := slimObject(service("big", fmt.Sprintf("new-%d", i), fmt.Sprintf("10.102.%d.%d", i>>8&255, i&255), withPort("http", v1.ProtocolTCP, 80)))
			v.c.put(b, svc.(runtime.Object))
			v.sync(b)
		}
	})
	b.Run("EndpointSliceUpdate", func(b *testing.B) {
		key := fmt.Sprintf("big/svc-%d-abcde", n/2)
		obj, ok, err := v.c.endpointSlices.GetByKey(key)
		if !ok || err != nil {
			b.Fatal("no slice", key, err)
		}
		orig := obj.(*discoveryv1.EndpointSlice)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			i++
			es := orig.DeepCopy()
			ready := i%2 == 0
			es.Endpoints[3].Conditions.Ready = &ready
			v.c.put(b, es)
			v.sync(b)
		}
	})
}

// BenchmarkScaleMemory reports the heap in use (heap-MB) and the live heap
// (live-MB) once the informer caches and the DNS view of 10k Services
// (scaleObjects) are built, and the time of that first build.
func BenchmarkScaleMemory(b *testing.B) {
	objs := scaleObjects(10000)
	var heap, alloc float64
	for b.Loop() {
		goruntime.GC()
		var before goruntime.MemStats
		goruntime.ReadMemStats(&before)
		v := newScaleView(b, objs)
		goruntime.GC()
		var after goruntime.MemStats
		goruntime.ReadMemStats(&after)
		heap = float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
		alloc = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		goruntime.KeepAlive(v)
	}
	b.ReportMetric(heap, "heap-MB")
	b.ReportMetric(alloc, "live-MB")
}
