package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// updater keeps the DNS view in step with the API one object at a time,
// as CoreDNS updates its index per object. The informers' event handlers
// only record which Namespaces and Services changed (an EndpointSlice
// records the Service its kubernetes.io/service-name label names); apply
// recomputes just those from the informer caches into persistent maps, and
// snapshot publishes the result. An update thus costs what the changed
// objects cost, whatever the size of the cluster, and a burst of events
// (a rollout) between two updates is one update.
type updater struct {
	zone string
	ttl  uint32
	// pending has a value while changes wait for apply.
	pending chan struct{}

	mu              sync.Mutex
	dirtyNamespaces map[string]struct{} // Namespace names
	dirtyServices   map[string]struct{} // Service keys, "namespace/name"
	// slicesOf maps a Service key to the names of the EndpointSlices
	// labelled with it, sorted. A list is replaced, never changed in place.
	slicesOf map[string][]string

	// The view being built; only the goroutine calling apply and snapshot
	// touches it.
	batch      uint64 // pmap batch: snapshot starts a new one
	changes    int    // objects changed in this batch
	services   pmap[string, *serviceInfo, stringHash]
	namespaces pmap[string, struct{}, stringHash]
	reverse    pmap[netip.Addr, string, addrHash]
	dnsAddrs   []netip.Addr

	// Buffers reused by applyService and updateReverse.
	slices             []*discoveryv1.EndpointSlice
	oldAddrs, newAddrs []netip.Addr
}

func newUpdater(zone string, ttl uint32) *updater {
	return &updater{
		zone:            zone,
		ttl:             ttl,
		pending:         make(chan struct{}, 1),
		dirtyNamespaces: map[string]struct{}{},
		dirtyServices:   map[string]struct{}{},
		slicesOf:        map[string][]string{},
		batch:           1,
	}
}

// objectGetter reads an informer's cache by key; cache.Store is one.
type objectGetter interface {
	GetByKey(key string) (item any, exists bool, err error)
}

// caches are the informer caches apply reads.
type caches struct {
	namespaces, services, endpointSlices objectGetter
}

// namespaceHandler, serviceHandler and endpointSliceHandler are the
// informers' event handlers.
func (u *updater) namespaceHandler() cache.ResourceEventHandler {
	mark := func(obj any) { u.mark(u.dirtyNamespaces, obj) }
	return cache.ResourceEventHandlerFuncs{AddFunc: mark, UpdateFunc: func(_, obj any) { mark(obj) }, DeleteFunc: mark}
}

func (u *updater) serviceHandler() cache.ResourceEventHandler {
	mark := func(obj any) { u.mark(u.dirtyServices, obj) }
	return cache.ResourceEventHandlerFuncs{AddFunc: mark, UpdateFunc: func(_, obj any) { mark(obj) }, DeleteFunc: mark}
}

func (u *updater) endpointSliceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { u.sliceChanged(nil, obj) },
		UpdateFunc: u.sliceChanged,
		DeleteFunc: func(obj any) { u.sliceChanged(obj, nil) },
	}
}

func (u *updater) mark(set map[string]struct{}, obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return // not an API object: nothing to look up
	}
	u.mu.Lock()
	set[key] = struct{}{}
	u.mu.Unlock()
	u.signal()
}

func (u *updater) signal() {
	select {
	case u.pending <- struct{}{}:
	default:
	}
}

// sliceChanged files an EndpointSlice under the Service its label names
// (old is nil for an add, cur for a delete) and marks that Service, and
// the one it named before if the label changed.
func (u *updater) sliceChanged(old, cur any) {
	oldSvc, oldName := sliceOwner(old)
	curSvc, curName := sliceOwner(cur)
	u.mu.Lock()
	if oldSvc != "" && (oldSvc != curSvc || oldName != curName) {
		u.fileSlice(oldSvc, oldName, false)
		u.dirtyServices[oldSvc] = struct{}{}
	}
	if curSvc != "" {
		u.fileSlice(curSvc, curName, true)
		u.dirtyServices[curSvc] = struct{}{}
	}
	u.mu.Unlock()
	u.signal()
}

// sliceOwner returns the key of the Service an EndpointSlice (or its
// tombstone) belongs to, and the slice's name; "" for nil or a slice
// without the label.
func sliceOwner(obj any) (svcKey, name string) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || es.Labels[serviceNameLabel] == "" {
		return "", ""
	}
	return es.Namespace + "/" + es.Labels[serviceNameLabel], es.Name
}

// fileSlice adds or removes a slice name in u.slicesOf[svcKey]; u.mu is held.
func (u *updater) fileSlice(svcKey, name string, add bool) {
	list := u.slicesOf[svcKey]
	i, found := slices.BinarySearch(list, name)
	switch {
	case add && !found:
		u.slicesOf[svcKey] = slices.Insert(slices.Clip(list), i, name)
	case !add && found && len(list) == 1:
		delete(u.slicesOf, svcKey)
	case !add && found:
		u.slicesOf[svcKey] = slices.Delete(slices.Clone(list), i, i+1)
	}
}

// apply recomputes every Namespace and Service marked since the last call
// from the caches, and reports whether any answer changed. A key it could
// not read stays marked for the next call.
func (u *updater) apply(c caches) (changed bool, err error) {
	u.mu.Lock()
	namespaces, services := u.dirtyNamespaces, u.dirtyServices
	u.dirtyNamespaces, u.dirtyServices = map[string]struct{}{}, map[string]struct{}{}
	u.mu.Unlock()

	var errs []error
	retry := func(set map[string]struct{}, key string, err error) {
		errs = append(errs, err)
		u.mu.Lock()
		set[key] = struct{}{}
		u.mu.Unlock()
	}
	for name := range namespaces {
		_, exists, err := c.namespaces.GetByKey(name)
		if err != nil {
			retry(u.dirtyNamespaces, name, fmt.Errorf("read Namespace %s from the informer cache: %w", name, err))
			continue
		}
		if exists == u.namespaces.has(name) {
			continue
		}
		if exists {
			u.namespaces = u.namespaces.set(u.batch, name, struct{}{})
		} else {
			u.namespaces = u.namespaces.del(u.batch, name)
		}
		u.changes++
		changed = true
	}
	for key := range services {
		svcChanged, err := u.applyService(c, key)
		if err != nil {
			retry(u.dirtyServices, key, err)
		}
		changed = changed || svcChanged
	}
	if len(errs) > 0 {
		u.signal()
	}
	return changed, errors.Join(errs...)
}

// applyService recomputes the Service with informer key "namespace/name"
// and its endpoints.
func (u *updater) applyService(c caches, key string) (bool, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return false, nil
	}
	obj, exists, err := c.services.GetByKey(key)
	if err != nil {
		return false, fmt.Errorf("read Service %s from the informer cache: %w", key, err)
	}
	var info *serviceInfo
	if svc, ok := obj.(*v1.Service); exists && ok {
		u.mu.Lock()
		names := u.slicesOf[key]
		u.mu.Unlock()
		list := u.slices[:0]
		for _, n := range names {
			obj, exists, err := c.endpointSlices.GetByKey(ns + "/" + n)
			if err != nil {
				return false, fmt.Errorf("read EndpointSlice %s/%s from the informer cache: %w", ns, n, err)
			}
			// A slice deleted or relabelled since it was filed has marked
			// this Service again.
			if es, ok := obj.(*discoveryv1.EndpointSlice); exists && ok && es.Labels[serviceNameLabel] == name {
				list = append(list, es)
			}
		}
		info = newServiceInfo(u.zone, svc, list)
		clear(list) // the buffer must not keep deleted slices alive
		u.slices = list[:0]
	}
	k := name + "." + ns
	old, _ := u.services.get(k)
	if old.equal(info) {
		return false, nil
	}
	if info == nil {
		u.services = u.services.del(u.batch, k)
	} else {
		u.services = u.services.set(u.batch, info.key(), info)
	}
	if key == "kube-system/kube-dns" {
		u.dnsAddrs = nil
		if info != nil {
			u.dnsAddrs = info.clusterIPs
		}
	}
	u.updateReverse(old, info)
	u.changes++
	return true, nil
}

// updateReverse moves a Service's claims on IPs (ClusterIPs and ready
// endpoint IPs) from what old carried to what info carries: a merge of the
// two sorted address lists, in buffers kept between calls (a first sync
// runs this for every Service, and short-lived garbage between the view's
// long-lived objects would fragment the heap).
func (u *updater) updateReverse(old, info *serviceInfo) {
	u.oldAddrs = old.appendAddrs(u.oldAddrs[:0])
	u.newAddrs = info.appendAddrs(u.newAddrs[:0])
	was, is := u.oldAddrs, u.newAddrs
	for len(was) > 0 || len(is) > 0 {
		switch {
		case len(is) == 0 || len(was) > 0 && was[0].Less(is[0]):
			u.removeClaim(was[0], old.key())
			was = was[1:]
		case len(was) == 0 || is[0].Less(was[0]):
			u.addClaim(is[0], info.key())
			is = is[1:]
		default: // kept
			was, is = was[1:], is[1:]
		}
	}
}

// appendAddrs appends the IPs a Service answers with to buf, sorted and
// without repeats; none for nil.
func (info *serviceInfo) appendAddrs(buf []netip.Addr) []netip.Addr {
	if info == nil {
		return buf
	}
	buf = append(buf, info.clusterIPs...)
	for _, ep := range info.endpoints {
		buf = append(buf, ep.addr)
	}
	slices.SortFunc(buf, netip.Addr.Compare)
	return slices.Compact(buf)
}

// addClaim adds a Service key to the sorted, space-separated keys that
// carry ip. The common case, one Service, stores the key itself.
func (u *updater) addClaim(ip netip.Addr, key string) {
	cur, ok := u.reverse.get(ip)
	if !ok {
		u.reverse = u.reverse.set(u.batch, ip, key)
		return
	}
	keys := strings.Split(cur, " ")
	i, found := slices.BinarySearch(keys, key)
	if found {
		return
	}
	u.reverse = u.reverse.set(u.batch, ip, strings.Join(slices.Insert(keys, i, key), " "))
}

func (u *updater) removeClaim(ip netip.Addr, key string) {
	cur, ok := u.reverse.get(ip)
	if !ok {
		return
	}
	if cur == key {
		u.reverse = u.reverse.del(u.batch, ip)
		return
	}
	keys := strings.Split(cur, " ")
	if i, found := slices.BinarySearch(keys, key); found {
		u.reverse = u.reverse.set(u.batch, ip, strings.Join(slices.Delete(keys, i, i+1), " "))
	}
}

// compactAfter is how many changed objects make a batch big enough to
// compact the nodes it built (a first sync, a relist after a long
// disconnection). Smaller batches only copy paths, which are exact already.
const compactAfter = 256

// snapshot freezes the view built so far into a snapshot. Later applies
// copy what they change, so the snapshot stays as it is.
func (u *updater) snapshot(gen uint64, serial uint32) *snapshot {
	if u.changes >= compactAfter {
		// Nodes filled in place kept headroom, and the slices they outgrew
		// are garbage spread between long-lived objects: copied to exact
		// size, the first sync of 10k Services holds 27 MB of heap, not 32.
		u.services = u.services.compact(u.batch)
		u.namespaces = u.namespaces.compact(u.batch)
		u.reverse = u.reverse.compact(u.batch)
	}
	u.changes = 0
	s := &snapshot{
		gen:        gen,
		zone:       u.zone,
		ttl:        u.ttl,
		serial:     serial,
		services:   u.services,
		namespaces: u.namespaces,
		reverse:    u.reverse,
		dnsAddrs:   u.dnsAddrs,
	}
	u.batch++
	return s
}
