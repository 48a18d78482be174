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
// table yields an empty transaction. Affinity sets are never flushed, so
// ClientIP affinity survives syncs.
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
	}

	for _, name := range slices.Sorted(maps.Keys(next.affinity)) {
		if full {
			tx.Add(affinitySet(name, next))
		} else if _, ok := applied.affinity[name]; !ok {
			tx.Add(affinitySet(name, next))
		}
	}

	// Declare every new chain before any rule, since rules jump to chains
	// declared later in name order.
	var write []string
	for _, name := range next.chainOrder {
		if !full {
			if old, ok := applied.chains[name]; ok {
				if !slices.Equal(old, next.chains[name]) {
					write = append(write, name)
				}
				continue
			}
		}
		ch := &knftables.Chain{Name: name}
		if bc, ok := baseChains[name]; ok {
			ch.Type, ch.Hook, ch.Priority = knftables.PtrTo(bc.typ), knftables.PtrTo(bc.hook), knftables.PtrTo(bc.priority)
		}
		tx.Add(ch)
		write = append(write, name)
	}
	// A chain that did not exist before is empty; skipping its flush saves
	// a sixth of a full sync's operations at 10k Services.
	var existed map[string]bool
	if full && existing != nil {
		existed = make(map[string]bool, len(existing["chain"]))
		for _, c := range existing["chain"] {
			existed[c] = true
		}
	}
	for _, name := range write {
		if existed == nil || existed[name] || (!full && applied.hasChain(name)) {
			tx.Flush(&knftables.Chain{Name: name})
		}
		for _, rule := range next.chains[name] {
			tx.Add(&knftables.Rule{Chain: name, Rule: rule})
		}
	}

	containers := []string{setClusterIPs, setNodePortIPs, mapServiceIPs, mapServiceNodePorts, mapNoEndpointServices, mapNoEndpointNodePort, mapFirewallIPs}
	if full {
		for _, s := range staticSets {
			tx.Flush(s)
		}
		for _, m := range staticMaps {
			tx.Flush(m)
		}
		for _, c := range containers {
			if l := next.elements[c]; l != nil {
				for _, k := range l.order {
					tx.Add(toElement(c, l.byKey[k]))
				}
			}
		}
	} else {
		// Deletes first: a changed element is deleted and re-added, because
		// adding an existing key with another verdict fails.
		for _, c := range containers {
			old, cur := applied.elements[c], next.elements[c]
			for _, k := range old.keys() {
				if e, ok := cur.get(k); !ok || !sameElement(e, old.byKey[k]) {
					tx.Delete(&knftables.Element{Set: setName(c), Map: mapName(c), Key: old.byKey[k].key})
				}
			}
		}
		for _, c := range containers {
			old, cur := applied.elements[c], next.elements[c]
			for _, k := range cur.keys() {
				if e, ok := old.get(k); !ok || !sameElement(e, cur.byKey[k]) {
					tx.Add(toElement(c, cur.byKey[k]))
				}
			}
		}
	}

	// Leftovers: chains and affinity sets no longer wanted.
	var oldChains, oldSets []string
	if full {
		oldChains, oldSets = existing["chain"], existing["set"]
	} else {
		oldChains, oldSets = applied.chainOrder, slices.Sorted(maps.Keys(applied.affinity))
	}
	for _, name := range oldChains {
		if _, ok := next.chains[name]; !ok && isServiceObject(name) {
			tx.Flush(&knftables.Chain{Name: name})
			stale = append(stale, name)
		}
	}
	for _, name := range oldSets {
		if _, ok := next.affinity[name]; !ok && isServiceObject(name) {
			// The chains using the set were flushed or rewritten above.
			tx.Delete(&knftables.Set{Name: name})
		}
	}
	return stale
}

func affinitySet(name string, r *ruleset) *knftables.Set {
	return &knftables.Set{
		Name: name,
		Type: "ipv4_addr",
		// "dynamic" because the rules add to it; without it some kernels add
		// the flag themselves and the next identical add fails.
		Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
		Timeout: knftables.PtrTo(r.affinity[name]),
	}
}

func sameElement(a, b element) bool { return a.value == b.value && a.comment == b.comment }

func isSet(c string) bool { return c == setClusterIPs || c == setNodePortIPs }

func setName(c string) string {
	if isSet(c) {
		return c
	}
	return ""
}

func mapName(c string) string {
	if isSet(c) {
		return ""
	}
	return c
}

func toElement(c string, e element) *knftables.Element {
	el := &knftables.Element{Set: setName(c), Map: mapName(c), Key: e.key}
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
