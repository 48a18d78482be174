package netpol

import (
	"maps"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

// TableName is the nftables table (family ip) that netpol owns alone.
const TableName = "knet-netpol"

const (
	chainForward   = "forward"
	setAlwaysAllow = "always-allowed"
	mapIngressPods = "ingress-pods"
	mapEgressPods  = "egress-pods"
	suffixAnyPort  = "-any"
	suffixPorts    = "-ports"
	typeAddr       = "ipv4_addr"
	typePorts      = "ipv4_addr . inet_proto . inet_service"
	typePodMap     = "ipv4_addr : verdict"
	maxCommentLen  = 128 // nftables' limit
)

// ruleset is the complete content of the table as values, so two syncs can
// be compared and diffed.
type ruleset struct {
	chains map[string]*chainDef
	sets   map[string]*setDef // sets and maps
}

type chainDef struct {
	comment string
	base    bool
	rules   []string
}

type setDef struct {
	typ      string // "a : verdict" for a map
	interval bool
	comment  string
	elems    map[string]element // joined key -> element
}

type element struct {
	key   []string
	value string // "" in a set
}

func (s *setDef) isMap() bool { return strings.Contains(s.typ, " : ") }

func (s *setDef) add(e element) { s.elems[strings.Join(e.key, " . ")] = e }

// render turns the desired state into a ruleset. It is pure.
func render(st *State) *ruleset {
	r := &ruleset{chains: map[string]*chainDef{}, sets: map[string]*setDef{}}
	r.chains[chainForward] = &chainDef{base: true, rules: []string{
		// Replies and related ICMP of connections that policy allowed
		// when they started.
		"ct state established,related accept",
		"ip saddr @" + setAlwaysAllow + " accept",
		"ip saddr vmap @" + mapEgressPods,
		"ip daddr vmap @" + mapIngressPods,
	}}
	always := &setDef{typ: typeAddr, comment: "node addresses and pod gateway: always reach local pods", elems: map[string]element{}}
	for _, a := range st.AlwaysAllowed {
		always.add(element{key: []string{a.String()}})
	}
	r.sets[setAlwaysAllow] = always
	for _, name := range []string{mapIngressPods, mapEgressPods} {
		r.sets[name] = &setDef{typ: typePodMap, comment: "local pods isolated for " + strings.TrimSuffix(name, "-pods"), elems: map[string]element{}}
	}
	for ip, g := range st.Ingress {
		r.sets[mapIngressPods].add(element{key: []string{ip.String()}, value: "jump " + g})
	}
	for ip, g := range st.Egress {
		r.sets[mapEgressPods].add(element{key: []string{ip.String()}, value: "jump " + g})
	}
	for _, g := range st.Groups {
		renderGroup(r, g)
	}
	return r
}

func renderGroup(r *ruleset, g *Group) {
	peer, ok := "ip saddr", "accept"
	if g.Direction == networkingv1.PolicyTypeEgress {
		// Egress allowed: go on to the destination's ingress check.
		peer, ok = "ip daddr", "return"
	}
	comment := strings.Join(g.Policies, ",")
	if len(comment) > maxCommentLen {
		comment = comment[:maxCommentLen-3] + "..."
	}
	ch := &chainDef{comment: comment}
	r.chains[g.Name] = ch
	if g.AllowAll {
		ch.rules = []string{ok}
		return
	}
	if len(g.AnyPort) > 0 {
		s := &setDef{typ: typeAddr, interval: true, elems: map[string]element{}}
		for _, a := range g.AnyPort {
			s.add(element{key: []string{a.String()}})
		}
		r.sets[g.Name+suffixAnyPort] = s
		ch.rules = append(ch.rules, peer+" @"+g.Name+suffixAnyPort+" "+ok)
	}
	if len(g.Ports) > 0 {
		s := &setDef{typ: typePorts, interval: true, elems: map[string]element{}}
		for _, b := range g.Ports {
			s.add(element{key: []string{b.addrs.String(), b.proto, b.ports.String()}})
		}
		r.sets[g.Name+suffixPorts] = s
		ch.rules = append(ch.rules, peer+" . meta l4proto . th dport @"+g.Name+suffixPorts+" "+ok)
	}
	ch.rules = append(ch.rules, "drop")
}

func (s *setDef) object(name string) knftables.Object {
	var flags []knftables.SetFlag
	if s.interval {
		flags = []knftables.SetFlag{knftables.IntervalFlag}
	}
	var comment *string
	if s.comment != "" {
		comment = &s.comment
	}
	if s.isMap() {
		return &knftables.Map{Name: name, Type: s.typ, Flags: flags, Comment: comment}
	}
	return &knftables.Set{Name: name, Type: s.typ, Flags: flags, Comment: comment}
}

func (c *chainDef) object(name string) *knftables.Chain {
	ch := &knftables.Chain{Name: name}
	if c.comment != "" {
		ch.Comment = knftables.PtrTo(c.comment)
	}
	if c.base {
		ch.Type = knftables.PtrTo(knftables.FilterType)
		ch.Hook = knftables.PtrTo(knftables.ForwardHook)
		ch.Priority = knftables.PtrTo(knftables.FilterPriority)
	}
	return ch
}

func elementObj(set string, isMap bool, e element) *knftables.Element {
	el := &knftables.Element{Key: e.key}
	if isMap {
		el.Map = set
		el.Value = []string{e.value}
	} else {
		el.Set = set
	}
	return el
}

// plan adds to tx the operations that move the table from applied to next.
// applied == nil means the kernel state is unknown (first sync, or after a
// failure): the table is then deleted and rebuilt in the same transaction,
// which the kernel applies atomically, so no packet sees it half-built. With
// applied known, only the differences are written; equal rulesets add no
// operation at all.
func plan(tx *knftables.Transaction, applied, next *ruleset) {
	if applied == nil {
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("knet NetworkPolicy enforcement")})
		tx.Delete(&knftables.Table{})
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("knet NetworkPolicy enforcement")})
		applied = &ruleset{chains: map[string]*chainDef{}, sets: map[string]*setDef{}}
	}
	chainNames := slices.Sorted(maps.Keys(next.chains))
	setNames := slices.Sorted(maps.Keys(next.sets))

	// 1. New chains and sets, so elements and rules below can refer to them.
	for _, n := range chainNames {
		if applied.chains[n] == nil {
			tx.Add(next.chains[n].object(n))
		}
	}
	// A name fixes a set's definition (type, flags, comment), so an existing
	// set never needs redefining.
	for _, n := range setNames {
		if applied.sets[n] == nil {
			tx.Add(next.sets[n].object(n))
		}
	}
	// 2. Elements: removed ones first (their chains may go away below).
	for _, n := range setNames {
		s, old := next.sets[n], applied.sets[n]
		if old != nil {
			for _, k := range slices.Sorted(maps.Keys(old.elems)) {
				if e, keep := s.elems[k]; !keep || e.value != old.elems[k].value {
					tx.Delete(elementObj(n, s.isMap(), old.elems[k]))
				}
			}
		}
		for _, k := range slices.Sorted(maps.Keys(s.elems)) {
			if old != nil {
				if e, had := old.elems[k]; had && e.value == s.elems[k].value {
					continue
				}
			}
			tx.Add(elementObj(n, s.isMap(), s.elems[k]))
		}
	}
	// 3. Rules of new and changed chains.
	for _, n := range chainNames {
		c, old := next.chains[n], applied.chains[n]
		if old != nil && slices.Equal(old.rules, c.rules) {
			continue
		}
		if old != nil {
			tx.Flush(c.object(n))
		}
		for _, rule := range c.rules {
			tx.Add(&knftables.Rule{Chain: n, Rule: rule})
		}
	}
	// 4. Removed chains lose their rules, then removed sets and chains go.
	gone := func(m map[string]*chainDef) []string {
		var out []string
		for n := range m {
			if next.chains[n] == nil {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out
	}(applied.chains)
	for _, n := range gone {
		tx.Flush(&knftables.Chain{Name: n})
	}
	for _, n := range slices.Sorted(maps.Keys(applied.sets)) {
		if s := applied.sets[n]; next.sets[n] == nil {
			tx.Delete(s.object(n))
		}
	}
	for _, n := range gone {
		tx.Delete(&knftables.Chain{Name: n})
	}
}
