package dns

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"net/netip"
	"slices"
)

// pmap is a persistent hash map (a hash array mapped trie, 32 ways per
// level): set and del return a new map and leave the old one as it was,
// copying only the nodes on the path to the key, so a snapshot can hold a
// map that the next update changes at a cost that does not grow with its
// size (a lookup or change visits log32(n) nodes: 3 for 10k keys).
//
// Changes carry a batch number: nodes created in the current batch are
// changed in place, since no published snapshot can reach them yet. The
// caller must start a new batch (a higher number) once it has handed out a
// map, and never change a map with an older batch number than its last.
//
// The shape of the trie depends only on the set of keys (except keys
// whose whole 64-bit hash collides, kept in insertion order), so two maps
// with the same contents compare equal with reflect.DeepEqual when they
// were built in the same batch number.
type pmap[K comparable, V any, H keyHasher[K]] struct {
	root *pnode[K, V]
	n    int
}

// keyHasher hashes pmap keys; implementations are empty structs, so the
// hash function is part of the map's type and not a field.
type keyHasher[K any] interface{ hash(K) uint64 }

type pnode[K comparable, V any] struct {
	batch  uint64
	bitmap uint32        // which of the 32 child positions are present; 0 in a collision node
	slots  []pslot[K, V] // in bit order; a collision node (past 64 bits of hash) lists its keys
}

// pslot is either a key and its value (sub == nil) or a child node.
type pslot[K comparable, V any] struct {
	key K
	val V
	sub *pnode[K, V]
}

const pbits = 5

func (m pmap[K, V, H]) len() int { return m.n }

func (m pmap[K, V, H]) get(k K) (V, bool) {
	var h H
	return m.getHashed(h.hash(k), k)
}

// getHashed is get for a key whose hash (H's) the caller computed: the
// query path calls the hash function directly, which lets the compiler
// keep a key built for the lookup on the stack (a call through the type
// parameter makes it escape).
func (m pmap[K, V, H]) getHashed(hv uint64, k K) (V, bool) {
	n := m.root
	for shift := uint(0); n != nil; shift += pbits {
		if shift >= 64 {
			for i := range n.slots {
				if n.slots[i].key == k {
					return n.slots[i].val, true
				}
			}
			break
		}
		bit := uint32(1) << (hv >> shift & 31)
		if n.bitmap&bit == 0 {
			break
		}
		s := &n.slots[bits.OnesCount32(n.bitmap&(bit-1))]
		if s.sub == nil {
			if s.key == k {
				return s.val, true
			}
			break
		}
		n = s.sub
	}
	var zero V
	return zero, false
}

func (m pmap[K, V, H]) has(k K) bool {
	_, ok := m.get(k)
	return ok
}

// set returns m with k mapped to v (see pmap for batch).
func (m pmap[K, V, H]) set(batch uint64, k K, v V) pmap[K, V, H] {
	var h H
	root, added := pset[K, V, H](m.root, batch, h.hash(k), 0, k, v)
	m.root = root
	if added {
		m.n++
	}
	return m
}

// del returns m without k (see pmap for batch).
func (m pmap[K, V, H]) del(batch uint64, k K) pmap[K, V, H] {
	var h H
	root, removed := pdel(m.root, batch, h.hash(k), 0, k)
	m.root = root
	if removed {
		m.n--
	}
	return m
}

// all yields every key and value, in hash order.
func (m pmap[K, V, H]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { m.root.each(yield) }
}

func (n *pnode[K, V]) each(yield func(K, V) bool) bool {
	if n == nil {
		return true
	}
	for i := range n.slots {
		s := &n.slots[i]
		if s.sub != nil {
			if !s.sub.each(yield) {
				return false
			}
		} else if !yield(s.key, s.val) {
			return false
		}
	}
	return true
}

func pset[K comparable, V any, H keyHasher[K]](n *pnode[K, V], batch, hv uint64, shift uint, k K, v V) (*pnode[K, V], bool) {
	if n == nil {
		n = &pnode[K, V]{batch: batch, slots: []pslot[K, V]{{key: k, val: v}}}
		if shift < 64 {
			n.bitmap = 1 << (hv >> shift & 31)
		}
		return n, true
	}
	if shift >= 64 {
		for i := range n.slots {
			if n.slots[i].key == k {
				n = n.own(batch, 0)
				n.slots[i].val = v
				return n, false
			}
		}
		n = n.own(batch, 1)
		n.slots = append(n.slots, pslot[K, V]{key: k, val: v})
		return n, true
	}
	bit := uint32(1) << (hv >> shift & 31)
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	if n.bitmap&bit == 0 {
		n = n.own(batch, 1)
		n.slots = slices.Insert(n.slots, i, pslot[K, V]{key: k, val: v})
		n.bitmap |= bit
		return n, true
	}
	s := n.slots[i]
	switch {
	case s.sub != nil:
		sub, added := pset[K, V, H](s.sub, batch, hv, shift+pbits, k, v)
		if sub != s.sub {
			n = n.own(batch, 0)
			n.slots[i].sub = sub
		}
		return n, added
	case s.key == k:
		n = n.own(batch, 0)
		n.slots[i].val = v
		return n, false
	}
	// Two keys share this position: push both one level down.
	var h H
	sub, _ := pset[K, V, H](nil, batch, h.hash(s.key), shift+pbits, s.key, s.val)
	sub, _ = pset[K, V, H](sub, batch, hv, shift+pbits, k, v)
	n = n.own(batch, 0)
	n.slots[i] = pslot[K, V]{sub: sub}
	return n, true
}

// pdel removes k below n. A node left with a single key (and no child) is
// folded into its parent, so the shape stays what inserting the remaining
// keys would have built.
func pdel[K comparable, V any](n *pnode[K, V], batch, hv uint64, shift uint, k K) (*pnode[K, V], bool) {
	if n == nil {
		return nil, false
	}
	if shift >= 64 {
		i := slices.IndexFunc(n.slots, func(s pslot[K, V]) bool { return s.key == k })
		if i < 0 {
			return n, false
		}
		if len(n.slots) == 1 {
			return nil, true
		}
		n = n.own(batch, 0)
		n.slots = slices.Delete(n.slots, i, i+1)
		return n, true
	}
	bit := uint32(1) << (hv >> shift & 31)
	if n.bitmap&bit == 0 {
		return n, false
	}
	i := bits.OnesCount32(n.bitmap & (bit - 1))
	s := n.slots[i]
	if s.sub == nil {
		if s.key != k {
			return n, false
		}
		if len(n.slots) == 1 {
			return nil, true
		}
		n = n.own(batch, 0)
		n.slots = slices.Delete(n.slots, i, i+1)
		n.bitmap &^= bit
		return n, true
	}
	sub, removed := pdel(s.sub, batch, hv, shift+pbits, k)
	if !removed {
		return n, false
	}
	n = n.own(batch, 0)
	switch {
	case sub == nil:
		n.slots = slices.Delete(n.slots, i, i+1)
		n.bitmap &^= bit
		if len(n.slots) == 0 {
			return nil, true
		}
	case len(sub.slots) == 1 && sub.slots[0].sub == nil:
		n.slots[i] = sub.slots[0]
	default:
		n.slots[i].sub = sub
	}
	return n, true
}

// own returns n if the current batch created it, else a copy, with room
// for extra more slots.
func (n *pnode[K, V]) own(batch uint64, extra int) *pnode[K, V] {
	if n.batch == batch {
		if len(n.slots)+extra > cap(n.slots) {
			// A quarter of headroom: nodes filled within one batch (the
			// first sync) are not copied on every insert, and waste
			// little once the batch ends.
			grown := make([]pslot[K, V], len(n.slots), len(n.slots)+extra+len(n.slots)/4)
			copy(grown, n.slots)
			n.slots = grown
		}
		return n
	}
	slots := make([]pslot[K, V], len(n.slots), len(n.slots)+extra)
	copy(slots, n.slots)
	return &pnode[K, V]{batch: batch, bitmap: n.bitmap, slots: slots}
}

// stringHash is FNV-1a with a final mix: deterministic, so equal contents
// give equal tries in every process.
type stringHash struct{}

func (stringHash) hash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

type addrHash struct{}

func (addrHash) hash(a netip.Addr) uint64 {
	b := a.As16()
	return mix64(binary.LittleEndian.Uint64(b[8:]) ^ mix64(binary.LittleEndian.Uint64(b[:8])))
}

// mix64 is splitmix64's finalizer: every input bit moves every output bit,
// so the trie's low levels are evenly filled.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// compact returns m with every node of the given batch copied into a
// node whose slots are exactly as many as it holds. Older nodes are left as
// they are (shared with published maps, and exact since copied).
func (m pmap[K, V, H]) compact(batch uint64) pmap[K, V, H] {
	m.root = m.root.compact(batch)
	return m
}

func (n *pnode[K, V]) compact(batch uint64) *pnode[K, V] {
	if n == nil || n.batch != batch {
		return n
	}
	c := &pnode[K, V]{batch: batch, bitmap: n.bitmap, slots: make([]pslot[K, V], len(n.slots))}
	copy(c.slots, n.slots)
	for i := range c.slots {
		c.slots[i].sub = c.slots[i].sub.compact(batch)
	}
	return c
}
