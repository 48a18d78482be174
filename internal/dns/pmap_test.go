package dns

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

// collidingHash puts keys in 4 buckets that share all 64 bits, to exercise
// the collision nodes and deep splits.
type collidingHash struct{}

func (collidingHash) hash(k int) uint64 { return uint64(k%4) * 0x9e3779b97f4a7c15 }

type intHash struct{}

func (intHash) hash(k int) uint64 { return mix64(uint64(k)) }

func contents[K comparable, V any, H keyHasher[K]](m pmap[K, V, H]) map[K]V {
	out := map[K]V{}
	for k, v := range m.all() {
		out[k] = v
	}
	return out
}

// checkMap compares m with want through get, has, len and all.
func checkMap[H keyHasher[int]](t *testing.T, what string, m pmap[int, string, H], want map[int]string, keys int) {
	t.Helper()
	if m.len() != len(want) {
		t.Fatalf("%s: len %d, want %d", what, m.len(), len(want))
	}
	if got := contents(m); !maps.Equal(got, want) {
		t.Fatalf("%s: all() = %v, want %v", what, got, want)
	}
	for k := range keys {
		v, ok := m.get(k)
		if w, wok := want[k]; ok != wok || v != w || m.has(k) != wok {
			t.Fatalf("%s: get(%d) = %q, %v; want %q, %v", what, k, v, ok, w, wok)
		}
	}
}

// TestPmapAgainstMap applies random sets and deletes in batches, keeps
// every published version and checks that each still holds what it held
// when it was published.
func TestPmapAgainstMap(t *testing.T) {
	t.Run("spread", func(t *testing.T) { testPmapAgainstMap[intHash](t) })
	t.Run("colliding", func(t *testing.T) { testPmapAgainstMap[collidingHash](t) })
}

func testPmapAgainstMap[H keyHasher[int]](t *testing.T) {
	const keys = 3000
	rng := rand.New(rand.NewPCG(1, 2))
	type version struct {
		m    pmap[int, string, H]
		want map[int]string
	}
	var published []version
	var m pmap[int, string, H]
	want := map[int]string{}
	for batch := uint64(1); batch <= 60; batch++ {
		ops := 1 + rng.IntN(400)
		if batch == 1 {
			ops = 5000 // a first sync: one big batch
		}
		for range ops {
			k := rng.IntN(keys)
			if rng.IntN(3) == 0 {
				m = m.del(batch, k)
				delete(want, k)
			} else {
				v := fmt.Sprint(batch, "/", k)
				m = m.set(batch, k, v)
				want[k] = v
			}
		}
		checkMap(t, fmt.Sprint("batch ", batch), m, want, keys)
		published = append(published, version{m, maps.Clone(want)})
	}
	for i, p := range published {
		checkMap(t, fmt.Sprint("published version ", i+1), p.m, p.want, keys)
	}
	// Delete everything: the root goes away.
	for k := range keys {
		m = m.del(100, k)
	}
	if m.root != nil || m.len() != 0 {
		t.Errorf("after deleting every key: root %v, len %d", m.root, m.len())
	}
}

// TestPmapShapeDependsOnlyOnKeys: the same keys inserted in another order,
// or reached by deleting others, give a DeepEqual trie (snapshots built
// from the same objects compare equal).
func TestPmapShapeDependsOnlyOnKeys(t *testing.T) {
	build := func(order []int) pmap[int, string, intHash] {
		var m pmap[int, string, intHash]
		for _, k := range order {
			m = m.set(1, k, fmt.Sprint(k))
		}
		return m
	}
	keys := make([]int, 2000)
	for i := range keys {
		keys[i] = i
	}
	a := build(keys)
	rng := rand.New(rand.NewPCG(3, 4))
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	b := build(keys)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same keys in another order give another trie")
	}
	// Add 3000 more and delete them again, in later batches.
	c := b
	for k := 2000; k < 5000; k++ {
		c = c.set(2, k, "x")
	}
	for k := 4999; k >= 2000; k-- {
		c = c.del(3, k)
	}
	if !reflect.DeepEqual(contents(a), contents(c)) || !sameShape(a.root, c.root) {
		t.Error("deleting keys does not give back the trie of the remaining keys")
	}
}

// sameShape compares tries ignoring the batch numbers.
func sameShape[K comparable, V any](a, b *pnode[K, V]) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.bitmap != b.bitmap || len(a.slots) != len(b.slots) {
		return false
	}
	for i := range a.slots {
		x, y := a.slots[i], b.slots[i]
		if (x.sub == nil) != (y.sub == nil) || x.sub == nil && x.key != y.key || !sameShape(x.sub, y.sub) {
			return false
		}
	}
	return true
}

func TestAddrHashKeepsFamiliesApart(t *testing.T) {
	var m pmap[netip.Addr, string, addrHash]
	v4, mapped := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::ffff:10.0.0.1")
	m = m.set(1, v4, "v4").set(1, mapped, "mapped")
	if got, _ := m.get(v4); got != "v4" {
		t.Errorf("get(10.0.0.1) = %q", got)
	}
	if got, _ := m.get(mapped); got != "mapped" {
		t.Errorf("get(::ffff:10.0.0.1) = %q", got)
	}
}

// TestPmapCompact: compacting keeps the contents and the shape, leaves
// nodes of earlier batches shared, and leaves no spare capacity in the
// batch's nodes.
func TestPmapCompact(t *testing.T) {
	var m pmap[int, string, intHash]
	for k := range 3000 {
		m = m.set(1, k, fmt.Sprint(k))
	}
	published := m.compact(1)
	if !reflect.DeepEqual(contents(published), contents(m)) || !sameShape(published.root, m.root) {
		t.Fatal("compact changed the map")
	}
	var spare func(n *pnode[int, string]) int
	spare = func(n *pnode[int, string]) int {
		if n == nil {
			return 0
		}
		s := cap(n.slots) - len(n.slots)
		for _, sl := range n.slots {
			s += spare(sl.sub)
		}
		return s
	}
	if spare(m.root) == 0 {
		t.Fatal("the test built no node with spare capacity: nothing to compact")
	}
	if s := spare(published.root); s != 0 {
		t.Errorf("compacted map has %d spare slots", s)
	}
	next := published.set(2, 5000, "x").compact(2)
	shared := 0
	for _, sl := range next.root.slots {
		for _, old := range published.root.slots {
			if sl.sub != nil && sl.sub == old.sub {
				shared++
			}
		}
	}
	if shared != len(published.root.slots)-1 {
		t.Errorf("after one change and a compaction %d of %d subtrees are shared, want all but one", shared, len(published.root.slots))
	}
	if _, ok := published.get(5000); ok {
		t.Error("a later change shows in the published map")
	}
}
