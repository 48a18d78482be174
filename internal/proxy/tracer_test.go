package proxy

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// packet is a test packet for the tracer. fromNode means a process in the
// node's own namespace sent it (output path); otherwise it arrives from a pod
// or another host (prerouting path).
type packet struct {
	src, dst string
	proto    string // tcp, udp, sctp
	dport    int
	fromNode bool
}

// traceResult is what a user would observe: the packet is accepted (and
// maybe DNATed to one of dnat, maybe masqueraded), rejected or dropped.
type traceResult struct {
	verdict string // ACCEPT, REJECT, DROP
	dnat    string // endpoints the packet may be DNATed to, sorted, ", "-joined
	masq    bool
}

// tracer walks a packet through the rules in a knftables.Fake, the way the
// kernel would walk the hooks: nat (prerouting or output), then filter
// (input, forward or output) on the possibly DNATed destination, then nat
// postrouting. Every branch of a numgen cascade is followed. Any rule it
// does not understand fails the test, so new rule shapes must be taught
// here before they can be tested.
type tracer struct {
	t        testing.TB
	table    *knftables.FakeTable
	localIPs []netip.Addr
}

type pktState struct {
	src, dst netip.Addr
	proto    string
	dport    int
	mark     bool
	dnat     []string
	masq     bool
	// dnatted: conntrack has DNATed this connection (ct status dnat).
	dnatted bool
}

func tracePacket(t testing.TB, nft *knftables.Fake, localIPs []netip.Addr, p packet) traceResult {
	t.Helper()
	tr := &tracer{t: t, table: nft.Table, localIPs: localIPs}
	st := &pktState{src: netip.MustParseAddr(p.src), dst: netip.MustParseAddr(p.dst), proto: p.proto, dport: p.dport}

	preChain, natChain, filterChain := chainFilterPreDNAT, chainNATPrerouting, chainFilterForward
	if p.fromNode {
		preChain, natChain, filterChain = chainFilterOutPre, chainNATOutput, chainFilterOutput
	}
	if v := tr.run(preChain, st); v == "reject" || v == "drop" {
		return traceResult{verdict: strings.ToUpper(v)}
	}
	if v := tr.run(natChain, st); v != "" && v != "accept" && v != "dnat" {
		return traceResult{verdict: strings.ToUpper(v)}
	}
	res := traceResult{verdict: "ACCEPT"}
	fst := *st
	if len(st.dnat) > 0 {
		slices.Sort(st.dnat)
		st.dnat = slices.Compact(st.dnat)
		res.dnat = strings.Join(st.dnat, ", ")
		ap := netip.MustParseAddrPort(st.dnat[0])
		fst.dst, fst.dport = ap.Addr(), int(ap.Port())
	}
	if !p.fromNode && tr.isLocal(fst.dst) {
		filterChain = chainFilterInput
	}
	if v := tr.run(filterChain, &fst); v == "reject" || v == "drop" {
		return traceResult{verdict: strings.ToUpper(v), dnat: res.dnat}
	}
	// Postrouting sees the DNATed destination: follow every possible one;
	// the packet may be masqueraded if any branch is.
	dsts := []netip.Addr{st.dst}
	if len(st.dnat) > 0 {
		dsts = dsts[:0]
		for _, d := range st.dnat {
			dsts = append(dsts, netip.MustParseAddrPort(d).Addr())
		}
	}
	for _, d := range dsts {
		post := &pktState{src: st.src, dst: d, proto: st.proto, mark: st.mark, dnatted: len(st.dnat) > 0}
		tr.run(chainNATPostrouting, post)
		res.masq = res.masq || post.masq
	}
	return res
}

func (tr *tracer) isLocal(a netip.Addr) bool {
	return a.IsLoopback() || slices.Contains(tr.localIPs, a)
}

var (
	reCtNew     = regexp.MustCompile(`^ct state new `)
	reAddr      = regexp.MustCompile(`^ip (saddr|daddr) (!= )?([0-9][0-9./]*) `)
	reAddrSet   = regexp.MustCompile(`^ip (saddr|daddr) @(\S+) `)
	reAnonSet   = regexp.MustCompile(`^ip (saddr|daddr) (!= )?\{ ([^}]*) \} `)
	reFibLocal  = regexp.MustCompile(`^fib (saddr|daddr) type local `)
	reProto     = regexp.MustCompile(`^meta l4proto (tcp|udp|sctp) `)
	reMarkClear = regexp.MustCompile(`^mark and \S+ == 0 `)
	reCtDNAT    = regexp.MustCompile(`^ct status dnat `)
	reHairpin   = regexp.MustCompile(`^update @(\S+) \{ ip saddr \. ip saddr \} ip saddr \. ip daddr @(\S+) `)

	reDispatch     = regexp.MustCompile(`^ip daddr \. meta l4proto \. th dport vmap @(\S+)$`)
	rePortDispatch = regexp.MustCompile(`^meta l4proto \. th dport vmap @(\S+)$`)
	reNumgen       = regexp.MustCompile(`^numgen random mod (\d+) == 0 (.+)$`)
	reJump         = regexp.MustCompile(`^(jump|goto) (\S+)$`)
	reDNAT         = regexp.MustCompile(`^dnat to (\S+)$`)
	reReject       = regexp.MustCompile(`^reject( with tcp reset)?$`)
	reMarkSet      = regexp.MustCompile(`^mark set mark (or|xor) \S+$`)
	reUpdate       = regexp.MustCompile(`^update @\S+ \{ ip saddr \}$`)
)

// run runs chain and returns its verdict: "" (fell off the end or
// returned), "accept", "drop", "reject" or "dnat".
func (tr *tracer) run(chain string, st *pktState) string {
	ch := tr.table.Chains[chain]
	if ch == nil {
		tr.t.Fatalf("tracer: no chain %q", chain)
	}
	for _, r := range ch.Rules {
		rule, ok := tr.matches(r.Rule, st)
		if !ok {
			continue
		}
		v, terminal := tr.action(chain, rule, st)
		if terminal {
			return v
		}
	}
	return ""
}

// matches consumes the rule's match expressions; it returns the remaining
// action and whether every match held.
func (tr *tracer) matches(rule string, st *pktState) (string, bool) {
	ok := true
	for {
		switch {
		case reCtNew.MatchString(rule):
			rule = rule[len(reCtNew.FindString(rule)):]
		case reAddr.MatchString(rule):
			m := reAddr.FindStringSubmatch(rule)
			a := st.src
			if m[1] == "daddr" {
				a = st.dst
			}
			in := false
			if strings.Contains(m[3], "/") {
				in = netip.MustParsePrefix(m[3]).Contains(a)
			} else {
				in = netip.MustParseAddr(m[3]) == a
			}
			ok = ok && in == (m[2] == "")
			rule = rule[len(m[0]):]
		case reAnonSet.MatchString(rule):
			m := reAnonSet.FindStringSubmatch(rule)
			a := st.src
			if m[1] == "daddr" {
				a = st.dst
			}
			in := false
			for _, e := range strings.Split(m[3], ", ") {
				if strings.Contains(e, "/") {
					in = in || netip.MustParsePrefix(e).Contains(a)
				} else {
					in = in || netip.MustParseAddr(e) == a
				}
			}
			ok = ok && in == (m[2] == "")
			rule = rule[len(m[0]):]
		case reAddrSet.MatchString(rule):
			m := reAddrSet.FindStringSubmatch(rule)
			a := st.src
			if m[1] == "daddr" {
				a = st.dst
			}
			set := tr.table.Sets[m[2]]
			if set == nil {
				tr.t.Fatalf("tracer: no set %q", m[2])
			}
			ok = ok && set.FindElement(a.String()) != nil
			rule = rule[len(m[0]):]
		case reFibLocal.MatchString(rule):
			m := reFibLocal.FindStringSubmatch(rule)
			a := st.src
			if m[1] == "daddr" {
				a = st.dst
			}
			ok = ok && tr.isLocal(a)
			rule = rule[len(m[0]):]
		case reProto.MatchString(rule):
			m := reProto.FindStringSubmatch(rule)
			ok = ok && st.proto == m[1]
			rule = rule[len(m[0]):]
		case reCtDNAT.MatchString(rule):
			ok = ok && st.dnatted
			rule = rule[len(reCtDNAT.FindString(rule)):]
		case reHairpin.MatchString(rule):
			// update @s { ip saddr . ip saddr } ip saddr . ip daddr @s: the
			// set holds only equal pairs, so this matches iff saddr == daddr.
			m := reHairpin.FindStringSubmatch(rule)
			if m[1] != m[2] || tr.table.Sets[m[1]] == nil {
				tr.t.Fatalf("tracer: hairpin rule %q: sets differ or do not exist", rule)
			}
			ok = ok && st.src == st.dst
			rule = rule[len(m[0]):]
		case reMarkClear.MatchString(rule):
			ok = ok && !st.mark
			rule = rule[len(reMarkClear.FindString(rule)):]
		default:
			return rule, ok
		}
	}
}

// action performs a rule's action; terminal reports whether the chain ends.
func (tr *tracer) action(chain, rule string, st *pktState) (string, bool) {
	lookup := func(mapName string, key ...string) string {
		m := tr.table.Maps[mapName]
		if m == nil {
			tr.t.Fatalf("tracer: no map %q", mapName)
		}
		if e := m.FindElement(key...); e != nil {
			return e.Value[0]
		}
		return ""
	}
	verdict := func(v string) (string, bool) {
		if v == "" {
			return "", false
		}
		m := reJump.FindStringSubmatch(v)
		if m == nil {
			tr.t.Fatalf("tracer: unexpected verdict %q", v)
		}
		r := tr.run(m[2], st)
		if m[1] == "goto" {
			return r, true
		}
		return r, r != ""
	}
	switch {
	case reDispatch.MatchString(rule):
		return verdict(lookup(reDispatch.FindStringSubmatch(rule)[1], st.dst.String(), st.proto, strconv.Itoa(st.dport)))
	case rePortDispatch.MatchString(rule):
		return verdict(lookup(rePortDispatch.FindStringSubmatch(rule)[1], st.proto, strconv.Itoa(st.dport)))
	case reNumgen.MatchString(rule):
		// A random pick that may or may not happen: follow the branch,
		// keep what it would do, and go on with the next rule as well.
		m := reNumgen.FindStringSubmatch(rule)
		branch := *st
		branch.dnat = nil
		if rest, ok := tr.matches(m[2], &branch); ok {
			tr.action(chain, rest, &branch)
		}
		st.dnat = append(st.dnat, branch.dnat...)
		st.mark = st.mark || branch.mark
		return "", false
	case reJump.MatchString(rule):
		return verdict(rule)
	case reDNAT.MatchString(rule):
		st.dnat = append(st.dnat, reDNAT.FindStringSubmatch(rule)[1])
		return "dnat", true
	case reReject.MatchString(rule):
		return "reject", true
	case rule == "drop":
		return "drop", true
	case rule == "return":
		return "", true
	case reMarkSet.MatchString(rule):
		if reMarkSet.FindStringSubmatch(rule)[1] == "or" {
			st.mark = true
		} else {
			st.mark = !st.mark
		}
		return "", false
	case rule == "masquerade fully-random":
		st.masq = true
		return "accept", true
	case reUpdate.MatchString(rule):
		return "", false
	}
	tr.t.Fatalf("tracer: chain %s: rule %q not understood", chain, rule)
	return "", true
}
