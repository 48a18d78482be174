package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// testCaches are informer-like caches that also feed an updater's event
// handlers, as an informer does.
type testCaches struct {
	namespaces, services, endpointSlices cache.Store
	u                                    *updater
	handlers                             map[string]cache.ResourceEventHandler
}

func newTestCaches(u *updater) *testCaches {
	return &testCaches{
		namespaces:     cache.NewStore(cache.MetaNamespaceKeyFunc),
		services:       cache.NewStore(cache.MetaNamespaceKeyFunc),
		endpointSlices: cache.NewStore(cache.MetaNamespaceKeyFunc),
		u:              u,
		handlers: map[string]cache.ResourceEventHandler{
			"ns": u.namespaceHandler(), "svc": u.serviceHandler(), "es": u.endpointSliceHandler(),
		},
	}
}

func (c *testCaches) caches() caches {
	return caches{namespaces: c.namespaces, services: c.services, endpointSlices: c.endpointSlices}
}

func (c *testCaches) kind(obj runtime.Object) (cache.Store, cache.ResourceEventHandler) {
	switch obj.(type) {
	case *v1.Namespace:
		return c.namespaces, c.handlers["ns"]
	case *v1.Service:
		return c.services, c.handlers["svc"]
	case *discoveryv1.EndpointSlice:
		return c.endpointSlices, c.handlers["es"]
	}
	panic(fmt.Sprintf("unexpected object %T", obj))
}

// put adds or replaces obj and notifies the handlers.
func (c *testCaches) put(t testing.TB, obj runtime.Object) {
	t.Helper()
	if err := c.store(obj); err != nil {
		t.Fatal(err)
	}
}

func (c *testCaches) store(obj runtime.Object) error {
	st, h := c.kind(obj)
	old, exists, err := st.Get(obj)
	if err == nil {
		err = st.Update(obj)
	}
	if err != nil {
		return err
	}
	if exists {
		h.OnUpdate(old, obj)
	} else {
		h.OnAdd(obj, false)
	}
	return nil
}

// remove deletes obj and notifies the handlers (with the tombstone an
// informer delivers after a missed delete, every other time).
func (c *testCaches) remove(t testing.TB, obj runtime.Object, tombstone bool) {
	t.Helper()
	st, h := c.kind(obj)
	old, exists, err := st.Get(obj)
	if err != nil || !exists {
		t.Fatalf("remove %v: exists %v, err %v", obj, exists, err)
	}
	if err := st.Delete(old); err != nil {
		t.Fatal(err)
	}
	if tombstone {
		key, _ := cache.MetaNamespaceKeyFunc(old)
		h.OnDelete(cache.DeletedFinalStateUnknown{Key: key, Obj: old})
	} else {
		h.OnDelete(old)
	}
}

func (c *testCaches) list() ([]*v1.Namespace, []*v1.Service, []*discoveryv1.EndpointSlice) {
	return storeList[*v1.Namespace](c.namespaces), storeList[*v1.Service](c.services), storeList[*discoveryv1.EndpointSlice](c.endpointSlices)
}

// buildSnapshot builds the snapshot of the given objects from nothing, as
// the first update after the informers synced does.
func buildSnapshot(zone string, ttl uint32, gen uint64, serial uint32, nss []*v1.Namespace, svcs []*v1.Service, slices []*discoveryv1.EndpointSlice) *snapshot {
	u := newUpdater(zone, ttl)
	c := newTestCaches(u)
	var objs []runtime.Object
	for _, o := range nss {
		objs = append(objs, o)
	}
	for _, o := range svcs {
		objs = append(objs, o)
	}
	for _, o := range slices {
		objs = append(objs, o)
	}
	for _, o := range objs {
		if err := c.store(o); err != nil {
			panic(err)
		}
	}
	if _, err := u.apply(c.caches()); err != nil {
		panic(err)
	}
	return u.snapshot(gen, serial)
}

// setSnapshot replaces the server's view with one of the given objects.
func (s *Server) setSnapshot(nss []*v1.Namespace, svcs []*v1.Service, slices []*discoveryv1.EndpointSlice) {
	s.snap.Store(buildSnapshot(s.zone, s.cfg.TTL, s.gens.Add(1), uint32(time.Now().Unix()), nss, svcs, slices))
}

// sameView compares what two snapshots answer from: every map's contents
// and the name servers (not gen, serial or the tries' batch numbers).
func sameView(a, b *snapshot) error {
	for _, c := range []struct {
		what string
		x, y any
	}{
		{"services", contents(a.services), contents(b.services)},
		{"namespaces", contents(a.namespaces), contents(b.namespaces)},
		{"reverse", contents(a.reverse), contents(b.reverse)},
		{"dnsAddrs", a.dnsAddrs, b.dnsAddrs},
	} {
		if !reflect.DeepEqual(c.x, c.y) {
			return fmt.Errorf("%s differ:\n got  %v\n want %v", c.what, c.x, c.y)
		}
	}
	return nil
}

// TestIncrementalUpdatesMatchAFullBuild applies random API changes in
// random batches (Services of every kind coming and going, EndpointSlices
// updated, relabelled and deleted before or after their Service, IPs
// shared between Services, Namespaces deleted and recreated) and checks
// after each batch that the updated view equals one built from scratch
// from the same objects, and that every earlier snapshot still answers as
// it did when it was published.
func TestIncrementalUpdatesMatchAFullBuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	u := newUpdater("cluster.local.", 5)
	c := newTestCaches(u)
	nsNames := []string{"a", "b", "kube-system"}
	svcNames := []string{"kube-dns", "web", "db", "ext", "alias", "x"}
	ip := func() string { return fmt.Sprintf("10.96.0.%d", 1+rng.IntN(6)) } // few: Services share them
	podIP := func() string { return fmt.Sprintf("10.244.0.%d", 1+rng.IntN(8)) }
	randomService := func(ns, name string) *v1.Service {
		switch rng.IntN(6) {
		case 0:
			return externalName(ns, name, []string{"example.org", "web.a.svc.cluster.local", "10.0.0.1", ""}[rng.IntN(4)])
		case 1:
			return service(ns, name, v1.ClusterIPNone, withPort("http", v1.ProtocolTCP, 80))
		case 2:
			return service(ns, name, ip()+",fd00::"+fmt.Sprint(rng.IntN(3)), withPort("dns", v1.ProtocolUDP, 53))
		case 3:
			return service(ns, name, ip())
		default:
			return service(ns, name, ip(), withPort("http", v1.ProtocolTCP, 80), withPort("https", v1.ProtocolTCP, 443))
		}
	}
	randomSlice := func(ns, name string) *discoveryv1.EndpointSlice {
		var eps []ep
		for range rng.IntN(4) {
			e := ep{ip: podIP(), notReady: rng.IntN(4) == 0}
			if rng.IntN(3) == 0 {
				e.hostname = fmt.Sprint("host-", rng.IntN(3))
			}
			eps = append(eps, e)
		}
		family := discoveryv1.AddressTypeIPv4
		if rng.IntN(8) == 0 {
			family = discoveryv1.AddressTypeFQDN
		}
		svc := svcNames[rng.IntN(len(svcNames))]
		return endpointSlice(ns, svc, name, family, []slicePort{{"http", v1.ProtocolTCP, 8080}}, eps...)
	}
	type published struct {
		snap *snapshot
		want *snapshot // built from scratch at the time
	}
	var history []published
	for batch := range 300 {
		for range 1 + rng.IntN(8) {
			ns := nsNames[rng.IntN(len(nsNames))]
			var obj runtime.Object
			switch rng.IntN(3) {
			case 0:
				obj = namespace(ns)
			case 1:
				obj = randomService(ns, svcNames[rng.IntN(len(svcNames))])
			default:
				obj = randomSlice(ns, fmt.Sprint("slice-", rng.IntN(5)))
			}
			st, _ := c.kind(obj)
			if _, exists, _ := st.Get(obj); exists && rng.IntN(3) == 0 {
				c.remove(t, obj, rng.IntN(2) == 0)
			} else {
				c.put(t, obj)
			}
		}
		if _, err := u.apply(c.caches()); err != nil {
			t.Fatal(err)
		}
		got := u.snapshot(uint64(batch), 0)
		nss, svcs, slices := c.list()
		want := buildSnapshot("cluster.local.", 5, 0, 0, nss, svcs, slices)
		if err := sameView(got, want); err != nil {
			t.Fatalf("after batch %d: %v", batch, err)
		}
		history = append(history, published{got, want})
	}
	for i, h := range history {
		if err := sameView(h.snap, h.want); err != nil {
			t.Fatalf("snapshot %d changed after it was published: %v", i, err)
		}
	}
}

// TestUpdateWithoutChangePublishesNothing: objects that are re-delivered
// unchanged (an informer relist), or that change in ways DNS does not
// show, leave the view as it is, so cached answers stay valid.
func TestUpdateWithoutChangePublishesNothing(t *testing.T) {
	u := newUpdater("cluster.local.", 5)
	c := newTestCaches(u)
	for _, o := range clusterObjects() {
		c.put(t, o)
	}
	if changed, err := u.apply(c.caches()); !changed || err != nil {
		t.Fatalf("first apply: changed %v, err %v", changed, err)
	}
	for _, o := range clusterObjects() {
		c.put(t, o) // an update with the same contents
	}
	// A not-ready endpoint of db becomes a different not-ready endpoint.
	c.put(t, endpointSlice("default", "db", "db-xyz", discoveryv1.AddressTypeIPv4, []slicePort{{"pg", v1.ProtocolTCP, 5432}},
		ep{ip: "10.244.2.7", hostname: "db-0"}, ep{ip: "10.244.2.8"}, ep{ip: "10.244.2.99", notReady: true}))
	if changed, err := u.apply(c.caches()); changed || err != nil {
		t.Errorf("apply without a visible change: changed %v, err %v; want false", changed, err)
	}
	c.put(t, endpointSlice("default", "db", "db-xyz", discoveryv1.AddressTypeIPv4, []slicePort{{"pg", v1.ProtocolTCP, 5432}},
		ep{ip: "10.244.2.7", hostname: "db-0"}))
	if changed, _ := u.apply(c.caches()); !changed {
		t.Error("apply after an endpoint went away: changed false, want true")
	}
}

// TestPTRWhenServicesShareAnIP: a ClusterIP names its Service alone even
// when it is also some endpoint's IP; an endpoint IP in several Services
// names each of them, Services in name.namespace order; as the IP moves
// between Services the answer follows.
func TestPTRWhenServicesShareAnIP(t *testing.T) {
	u := newUpdater("cluster.local.", 5)
	c := newTestCaches(u)
	ptr := func() []string {
		t.Helper()
		if _, err := u.apply(c.caches()); err != nil {
			t.Fatal(err)
		}
		return u.snapshot(1, 0).ptrTargets(netip.MustParseAddr("10.244.0.9"))
	}
	c.put(t, service("b", "zeta", v1.ClusterIPNone))
	c.put(t, endpointSlice("b", "zeta", "zeta-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.0.9", hostname: "z"}))
	c.put(t, service("a", "alpha", v1.ClusterIPNone))
	c.put(t, endpointSlice("a", "alpha", "alpha-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.0.9"}, ep{ip: "10.244.0.9"}))
	want := []string{"10-244-0-9.alpha.a.svc.cluster.local.", "z.zeta.b.svc.cluster.local."}
	if got := ptr(); !slices.Equal(got, want) {
		t.Errorf("endpoint IP in two Services: %q, want %q", got, want)
	}
	c.put(t, service("c", "mid", "10.244.0.9"))
	if got, want := ptr(), []string{"mid.c.svc.cluster.local."}; !slices.Equal(got, want) {
		t.Errorf("IP that is also a ClusterIP: %q, want %q", got, want)
	}
	c.remove(t, service("c", "mid", ""), false)
	c.remove(t, endpointSlice("a", "alpha", "alpha-1", "", nil), true)
	if got, want := ptr(), []string{"z.zeta.b.svc.cluster.local."}; !slices.Equal(got, want) {
		t.Errorf("after the ClusterIP and one slice went away: %q, want %q", got, want)
	}
	// The slice moves to another Service by its label.
	c.put(t, endpointSlice("b", "other", "zeta-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.0.9", hostname: "z"}))
	if got := ptr(); len(got) != 0 {
		t.Errorf("after the slice was relabelled to a Service that does not exist: %q, want nothing", got)
	}
	c.put(t, service("b", "other", v1.ClusterIPNone))
	if got, want := ptr(), []string{"z.other.b.svc.cluster.local."}; !slices.Equal(got, want) {
		t.Errorf("after its Service appeared: %q, want %q", got, want)
	}
}

// TestQueriesSeeEachUpdate follows a Service's life through the answers
// of one Server whose view is updated incrementally, as watch does.
func TestQueriesSeeEachUpdate(t *testing.T) {
	s := newTestServer(t, Config{})
	u := newUpdater(s.zone, s.cfg.TTL)
	c := newTestCaches(u)
	publish := func() {
		t.Helper()
		changed, err := u.apply(c.caches())
		if err != nil {
			t.Fatal(err)
		}
		if changed {
			s.snap.Store(u.snapshot(s.gens.Add(1), 1))
		}
	}
	answer := func(name string, qtype uint16) string {
		t.Helper()
		r, _ := exchangeWire(t, s, query(name, qtype), true)
		return fmt.Sprint(dns.RcodeToString[r.Rcode], strs(r.Answer))
	}
	const name = "web.team.svc.cluster.local."
	for _, step := range []struct {
		change func()
		qtype  uint16
		want   string
	}{
		{func() { c.put(t, namespace("team")) }, dns.TypeA, "NXDOMAIN[]"},
		{func() { c.put(t, service("team", "web", "10.96.5.5")) }, dns.TypeA, "NOERROR[web.team.svc.cluster.local.\t5\tIN\tA\t10.96.5.5]"},
		{func() { c.put(t, service("team", "web", v1.ClusterIPNone)) }, dns.TypeA, "NXDOMAIN[]"},
		{func() {
			c.put(t, endpointSlice("team", "web", "web-1", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.244.3.3"}))
		}, dns.TypeA, "NOERROR[web.team.svc.cluster.local.\t5\tIN\tA\t10.244.3.3]"},
		{func() { c.remove(t, namespace("team"), false) }, dns.TypeA, "NXDOMAIN[]"},
		{func() { c.put(t, namespace("team")) }, dns.TypeA, "NOERROR[web.team.svc.cluster.local.\t5\tIN\tA\t10.244.3.3]"},
		{func() { c.remove(t, service("team", "web", ""), true) }, dns.TypeA, "NXDOMAIN[]"},
	} {
		step.change()
		publish()
		if got := answer(name, step.qtype); got != step.want {
			t.Errorf("%s: %s, want %s", name, got, step.want)
		}
	}
}

// TestQueriesDuringUpdates reads published snapshots while later updates
// are applied (run it with -race): a snapshot must hold exactly the
// Services that existed when it was published, however the updater edits
// its next view.
func TestQueriesDuringUpdates(t *testing.T) {
	u := newUpdater("cluster.local.", 5)
	c := newTestCaches(u)
	c.put(t, namespace("ns"))
	var current atomic.Pointer[snapshot]
	const services = 600
	done := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				snap := current.Load()
				if snap == nil {
					continue
				}
				// Snapshot gen g holds Services s-0 .. s-(g-1), each with its
				// ClusterIP's PTR.
				n := int(snap.gen)
				if got := len(contents(snap.services)); got != n || snap.services.len() != n {
					errs <- fmt.Errorf("snapshot %d: %d Services (len %d), want %d", n, got, snap.services.len(), n)
					return
				}
				for _, i := range []int{0, n / 2, n - 1} {
					if i < 0 {
						continue
					}
					want := fmt.Sprintf("s-%d.ns.svc.cluster.local.", i)
					if got := snap.ptrTargets(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})); !slices.Equal(got, []string{want}) {
						errs <- fmt.Errorf("snapshot %d: PTR of Service %d: %q, want %s", n, i, got, want)
						return
					}
				}
				if snap.reverse.has(netip.AddrFrom4([4]byte{10, 96, byte(n >> 8), byte(n)})) {
					errs <- fmt.Errorf("snapshot %d holds the ClusterIP of a later Service", n)
					return
				}
			}
		}()
	}
	for i := range services {
		c.put(t, service("ns", fmt.Sprintf("s-%d", i), fmt.Sprintf("10.96.%d.%d", i>>8, i&255)))
		if _, err := u.apply(c.caches()); err != nil {
			t.Fatal(err)
		}
		current.Store(u.snapshot(uint64(i+1), 0))
	}
	close(done)
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
