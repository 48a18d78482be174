package proxy

import (
	"maps"
	"slices"

	"sigs.k8s.io/knftables"
)

// plan adds to tx the operations that move the table from applied to next,
// and returns the per-Service chains it flushed because they are no longer
// wanted. Those are deleted by a later transaction: before Linux 6.2 a chain
// that a just-deleted map element pointed to is still "in use" for a moment.
//
// applied == nil means the kernel state is unknown (first sync, after a
// failure, periodic resync): every chain and map is rewritten, and existing
// (from ListAll) names the objects already in the table so leftovers are
// removed. Otherwise only the differences are written, and an unchanged
// table yields an empty transaction. A ServicePort whose fragment is the
// same value in both costs nothing, so an incremental sync's cost follows
// the number of changed ServicePorts, not the number of Services. Affinity
// sets are never flushed, so ClientIP affinity survives syncs.
func plan(tx *knftables.Transaction, applied, next *ruleset, existing map[string][]string, recreateBaseChains bool) (stale []string) {
	full := applied == nil
	if full {
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("knet Service proxy; owned by knet, do not edit")})
		if recreateBaseChains {
			// add+delete makes the next add recreate base chains, so a change
			// of hook or priority by a newer knet takes effect.
			for _, name := range slices.Sorted(maps.Keys(baseChains)) {
				tx.Add(&knftables.Chain{Name: name})
				tx.Delete(&knftables.Chain{Name: name})
			}
		}
		for _, s := range staticSets {
			tx.Add(s)
		}
		for _, m := range staticMaps {
			tx.Add(m)
		}
		applied = &ruleset{}
	}

	// The pairs of fragments that differ: changed, new (old nil) and gone
	// (new nil).
	type pair struct{ old, new *fragment }
	var pairs []pair
	for _, name := range next.fragOrder {
		n, o := next.frags[name], applied.frags[name]
		if n != o && (o == nil || !n.sameAs(o)) {
			pairs = append(pairs, pair{o, n})
		}
	}
	for _, name := range applied.fragOrder {
		if _, ok := next.frags[name]; !ok {
			pairs = append(pairs, pair{applied.frags[name], nil})
		}
	}

	// Chains that existed before this transaction are flushed before they
	// are rewritten; a new one is empty, and skipping its flush saves a sixth
	// of a full sync's operations at 10k Services.
	var existed map[string]bool
	if full && existing != nil {
		existed = make(map[string]bool, len(existing["chain"]))
		for _, c := range existing["chain"] {
			existed[c] = true
		}
	}
	flushFirst := func(name string, hadIt bool) bool {
		if full {
			return existed == nil || existed[name]
		}
		return hadIt
	}

	// Affinity sets and every new chain are declared before any rule, since
	// rules refer to sets and to chains declared later.
	for _, p := range pairs {
		if p.new == nil {
			continue
		}
		for _, a := range p.new.affinity {
			if p.old == nil || !slices.Contains(p.old.affinity, a) {
				tx.Add(affinitySet(a))
			}
		}
	}
	type write struct {
		name  string
		rules []string
		flush bool
	}
	var writes []write
	for _, name := range next.chainOrder {
		rules := next.chains[name]
		old, had := applied.chains[name]
		if had && slices.Equal(old, rules) {
			continue
		}
		if !had {
			ch := &knftables.Chain{Name: name}
			if bc, ok := baseChains[name]; ok {
				ch.Type, ch.Hook, ch.Priority = knftables.PtrTo(bc.typ), knftables.PtrTo(bc.hook), knftables.PtrTo(bc.priority)
			}
			tx.Add(ch)
		}
		writes = append(writes, write{name, rules, flushFirst(name, had)})
	}
	for _, p := range pairs {
		if p.new == nil {
			continue
		}
		for _, c := range p.new.chains {
			var old *chainRules
			if p.old != nil {
				old = p.old.chain(c.name)
			}
			if old != nil && slices.Equal(old.rules, c.rules) {
				continue
			}
			if old == nil {
				tx.Add(&knftables.Chain{Name: c.name})
			}
			writes = append(writes, write{c.name, c.rules, flushFirst(c.name, old != nil)})
		}
	}
	for _, w := range writes {
		if w.flush {
			tx.Flush(&knftables.Chain{Name: w.name})
		}
		for _, rule := range w.rules {
			tx.Add(&knftables.Rule{Chain: w.name, Rule: rule})
		}
	}

	// Elements. Deletes first: a changed element is deleted and re-added,
	// because adding an existing key with another verdict fails.
	if full {
		for _, s := range staticSets {
			tx.Flush(s)
		}
		for _, m := range staticMaps {
			tx.Flush(m)
		}
	} else {
		for _, c := range staticElementSets {
			old, cur := applied.elements[c], next.elements[c]
			for _, k := range old.keys() {
				if e, ok := cur.get(k); !ok || !sameElement(e, old.byKey[k]) {
					tx.Delete(&knftables.Element{Set: c, Key: old.byKey[k].key})
				}
			}
		}
		for _, p := range pairs {
			if p.old == nil {
				continue
			}
			for _, oe := range p.old.containers {
				if p.new == nil || !p.new.hasElement(oe) {
					tx.Delete(&knftables.Element{Map: oe.container, Key: oe.e.key})
				}
			}
		}
	}
	for _, c := range staticElementSets {
		old, cur := applied.elements[c], next.elements[c]
		for _, k := range cur.keys() {
			if e, ok := old.get(k); !ok || !sameElement(e, cur.byKey[k]) {
				tx.Add(toElement(c, cur.byKey[k]))
			}
		}
	}
	for _, p := range pairs {
		if p.new == nil {
			continue
		}
		for _, ne := range p.new.containers {
			if p.old == nil || !p.old.hasElement(ne) {
				tx.Add(toElement(ne.container, ne.e))
			}
		}
	}

	// Leftovers: chains and affinity sets no longer wanted.
	if full {
		for _, name := range existing["chain"] {
			if isServiceObject(name) && !next.hasChain(name) {
				tx.Flush(&knftables.Chain{Name: name})
				stale = append(stale, name)
			}
		}
		for _, name := range existing["set"] {
			if isServiceObject(name) && !next.hasAffinity(name) {
				// The chains using the set were flushed or rewritten above.
				tx.Delete(&knftables.Set{Name: name})
			}
		}
		return stale
	}
	for _, p := range pairs {
		if p.old == nil {
			continue
		}
		for _, c := range p.old.chains {
			if p.new == nil || !p.new.hasChain(c.name) {
				tx.Flush(&knftables.Chain{Name: c.name})
				stale = append(stale, c.name)
			}
		}
		for _, a := range p.old.affinity {
			if p.new == nil || !slices.ContainsFunc(p.new.affinity, func(b affinitySpec) bool { return b.name == a.name }) {
				tx.Delete(&knftables.Set{Name: a.name})
			}
		}
	}
	return stale
}

// sameAs reports whether two fragments have the same content.
func (f *fragment) sameAs(o *fragment) bool {
	return slices.EqualFunc(f.chains, o.chains, func(a, b chainRules) bool { return a.name == b.name && slices.Equal(a.rules, b.rules) }) &&
		slices.Equal(f.affinity, o.affinity) &&
		slices.EqualFunc(f.containers, o.containers, func(a, b containerElement) bool {
			return a.container == b.container && a.key == b.key && sameElement(a.e, b.e)
		})
}

func (f *fragment) hasElement(ce containerElement) bool {
	for _, e := range f.containers {
		if e.container == ce.container && e.key == ce.key && sameElement(e.e, ce.e) {
			return true
		}
	}
	return false
}

func (r *ruleset) hasAffinity(name string) bool {
	f := r.frags[fragmentOf(name)]
	return f != nil && slices.ContainsFunc(f.affinity, func(a affinitySpec) bool { return a.name == name })
}

func affinitySet(a affinitySpec) *knftables.Set {
	return &knftables.Set{
		Name: a.name,
		Type: "ipv4_addr",
		// "dynamic" because the rules add to it; without it some kernels add
		// the flag themselves and the next identical add fails.
		Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
		Timeout: knftables.PtrTo(a.timeout),
	}
}

func sameElement(a, b element) bool { return a.value == b.value && a.comment == b.comment }

func isSet(c string) bool { return slices.Contains(staticElementSets, c) }

func toElement(c string, e element) *knftables.Element {
	el := &knftables.Element{Key: e.key}
	if isSet(c) {
		el.Set = c
	} else {
		el.Map = c
	}
	if e.value != "" {
		el.Value = []string{e.value}
	}
	if e.comment != "" {
		el.Comment = knftables.PtrTo(e.comment)
	}
	return el
}

func (l *elementList) keys() []string {
	if l == nil {
		return nil
	}
	return l.order
}

func (l *elementList) get(k string) (element, bool) {
	if l == nil {
		return element{}, false
	}
	e, ok := l.byKey[k]
	return e, ok
}
