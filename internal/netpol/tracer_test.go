package netpol

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

// fixtureNodeIPs are the node addresses and pod gateways of the fixture.
var fixtureNodeIPs = map[string][]netip.Addr{
	"node-1": {netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("10.244.1.1")},
	"node-2": {netip.MustParseAddr("172.18.0.3"), netip.MustParseAddr("10.244.2.1")},
}

// fakeTable compiles and applies the table of node into a fresh Fake.
func fakeTable(t testing.TB, node string, policies []*networkingv1.NetworkPolicy, pods []*v1.Pod, nss []*v1.Namespace) *knftables.Fake {
	t.Helper()
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	st := Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: node, AlwaysAllowed: fixtureNodeIPs[node]})
	tx := nft.NewTransaction()
	plan(tx, nil, render(st))
	if err := nft.Run(context.Background(), tx); err != nil {
		t.Fatalf("apply rendered table: %v", err)
	}
	return nft
}

// tracePkt is a packet as the forward hook sees it.
type tracePkt struct {
	src, dst    netip.Addr
	proto       string // tcp, udp, sctp
	dport       int
	established bool
}

// tracer walks a packet through the rules of a knftables.Fake the way the
// kernel walks the forward hook: rule by rule, sets and maps looked up by
// their elements (prefixes and ranges included), jump/return honoured. A
// rule shape it does not know fails the test, so new shapes must be taught
// here before they can be tested.
type tracer struct {
	t     testing.TB
	table *knftables.FakeTable
}

var (
	reEstablished = regexp.MustCompile(`^ct state established,related (accept)$`)
	reAddrSet     = regexp.MustCompile(`^ip (saddr|daddr) @(\S+) (accept|return)$`)
	reAddrVmap    = regexp.MustCompile(`^ip (saddr|daddr) vmap @(\S+)$`)
	rePortsSet    = regexp.MustCompile(`^ip (saddr|daddr) \. meta l4proto \. th dport @(\S+) (accept|return)$`)
	reVerdict     = regexp.MustCompile(`^(accept|return|drop)$`)
)

// traceForward returns the verdict of the forward chain: "accept" or "drop"
// (a packet that falls off the end is accepted: the chain's policy).
func traceForward(t testing.TB, nft *knftables.Fake, p tracePkt) string {
	t.Helper()
	tr := &tracer{t: t, table: nft.Table}
	if v := tr.run(chainForward, p, 0); v == "drop" {
		return "drop"
	}
	return "accept"
}

// run returns "accept", "drop", or "" (returned or fell off the end).
func (tr *tracer) run(chain string, p tracePkt, depth int) string {
	if depth > 8 {
		tr.t.Fatalf("tracer: jump loop at %q", chain)
	}
	ch := tr.table.Chains[chain]
	if ch == nil {
		tr.t.Fatalf("tracer: no chain %q", chain)
	}
	for _, r := range ch.Rules {
		rule := r.Rule
		var verdict string
		switch {
		case reEstablished.MatchString(rule):
			if p.established {
				return "accept"
			}
			continue
		case reAddrSet.MatchString(rule):
			m := reAddrSet.FindStringSubmatch(rule)
			if !tr.inSet(m[2], []string{pick(m[1], p).String()}) {
				continue
			}
			verdict = m[3]
		case rePortsSet.MatchString(rule):
			m := rePortsSet.FindStringSubmatch(rule)
			if !tr.inSet(m[2], []string{pick(m[1], p).String(), p.proto, strconv.Itoa(p.dport)}) {
				continue
			}
			verdict = m[3]
		case reAddrVmap.MatchString(rule):
			m := reAddrVmap.FindStringSubmatch(rule)
			mp := tr.table.Maps[m[2]]
			if mp == nil {
				tr.t.Fatalf("tracer: no map %q", m[2])
			}
			e := mp.FindElement(pick(m[1], p).String())
			if e == nil {
				continue
			}
			f := strings.Fields(e.Value[0])
			if len(f) != 2 || f[0] != "jump" {
				tr.t.Fatalf("tracer: unknown map value %q", e.Value[0])
			}
			if v := tr.run(f[1], p, depth+1); v != "" {
				return v
			}
			continue
		case reVerdict.MatchString(rule):
			verdict = rule
		default:
			tr.t.Fatalf("tracer: unknown rule %q in chain %q", rule, chain)
		}
		if verdict == "return" {
			return ""
		}
		return verdict
	}
	return ""
}

func pick(field string, p tracePkt) netip.Addr {
	if field == "saddr" {
		return p.src
	}
	return p.dst
}

// inSet reports whether key (address [. proto . port]) is in the set, each
// element field being a value, an address prefix, or an a-b range.
func (tr *tracer) inSet(name string, key []string) bool {
	s := tr.table.Sets[name]
	if s == nil {
		tr.t.Fatalf("tracer: no set %q", name)
	}
	hits := 0
	for _, e := range s.Elements {
		if len(e.Key) != len(key) {
			tr.t.Fatalf("tracer: set %q element %v does not fit key %v", name, e.Key, key)
		}
		ok := true
		for i := range key {
			ok = ok && fieldMatches(tr.t, e.Key[i], key[i])
		}
		if ok {
			hits++
		}
	}
	if hits > 1 {
		tr.t.Fatalf("tracer: %v matches %d elements of %q; interval elements must not overlap", key, hits, name)
	}
	return hits == 1
}

func fieldMatches(t testing.TB, elem, v string) bool {
	if a, err := netip.ParseAddr(v); err == nil {
		switch {
		case strings.Contains(elem, "/"):
			return netip.MustParsePrefix(elem).Contains(a)
		case strings.Contains(elem, "-"):
			lo, hi, _ := strings.Cut(elem, "-")
			return netip.MustParseAddr(lo).Compare(a) <= 0 && a.Compare(netip.MustParseAddr(hi)) <= 0
		}
		return netip.MustParseAddr(elem) == a
	}
	if n, err := strconv.Atoi(v); err == nil {
		lo, hi, isRange := strings.Cut(elem, "-")
		l, err1 := strconv.Atoi(lo)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("tracer: bad port element %q", elem)
		}
		return l <= n && n <= h
	}
	return elem == v
}

// traceCluster is what a user sees for a new connection: the packet crosses
// the forward hook of the source pod's node and of the destination pod's
// node (once if they are the same node), and must be accepted by each.
func traceCluster(t testing.TB, tables map[string]*knftables.Fake, src, dst endpoint, port int, proto v1.Protocol) bool {
	nodes := map[string]bool{}
	for _, e := range []endpoint{src, dst} {
		if e.name != "external" {
			ns, pod, _ := strings.Cut(e.name, "/")
			nodes[fixtureNode(ns, pod)] = true
		}
	}
	for n := range nodes {
		if traceForward(t, tables[n], tracePkt{src: src.ip, dst: dst.ip, proto: nftProto(proto), dport: port}) != "accept" {
			return false
		}
	}
	return true
}

// TestTracerMatchesModel proves the rendering, not just the model: for
// generated policy sets, every probe of the matrix traced through the two
// nodes' rendered tables gets the verdict Evaluate gives.
func TestTracerMatchesModel(t *testing.T) {
	pods, nss := makePods(), makeNamespaces()
	eps := matrixEndpoints()
	ports := append(matrixPorts, probePort{80, v1.ProtocolSCTP})
	cases := 300
	if testing.Short() {
		cases = 40
	}
	var allowed, denied int
	for seed := range cases {
		g := policyGen{rand.New(rand.NewPCG(uint64(seed), 2))}
		policies := g.policies()
		tables := map[string]*knftables.Fake{}
		for n := range fixtureNodeIPs {
			tables[n] = fakeTable(t, n, policies, pods, nss)
		}
		for _, src := range eps {
			for _, dst := range eps {
				// Self traffic never leaves the pod; external to external
				// never meets this node.
				if src == dst || src.name == "external" && dst.name == "external" {
					continue
				}
				for _, pp := range ports {
					want := Evaluate(policies, pods, nss, src.ip, dst.ip, pp.port, pp.proto).Allowed()
					got := traceCluster(t, tables, src, dst, pp.port, pp.proto)
					if got != want {
						t.Fatalf("seed %d: %s -> %s %d/%s: traced allowed=%v, model allowed=%v\npolicies:\n%s\nnode-1:\n%s\nnode-2:\n%s",
							seed, src.name, dst.name, pp.port, pp.proto, got, want, dumpPolicies(policies), tables["node-1"].Dump(), tables["node-2"].Dump())
					}
					if got {
						allowed++
					} else {
						denied++
					}
				}
			}
		}
	}
	if allowed < 1000 || denied < 1000 {
		t.Fatalf("generator too one-sided: %d allowed, %d denied probes", allowed, denied)
	}
	t.Logf("%d policy sets, %d allowed and %d denied probes agree", cases, allowed, denied)
}

// TestTracerNodeAndReplies: under a deny-all policy, the node's addresses
// and the pod gateway still reach local pods (probes), replies of
// established connections pass, and everything else is dropped.
func TestTracerNodeAndReplies(t *testing.T) {
	pods, nss := makePods(), makeNamespaces()
	denyAll := &networkingv1.NetworkPolicy{}
	denyAll.Namespace, denyAll.Name = "x", "deny-all"
	denyAll.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	nft := fakeTable(t, "node-1", []*networkingv1.NetworkPolicy{denyAll}, pods, nss)
	xa, xb := fixtureIP("x", "a"), fixtureIP("x", "b")
	for _, tc := range []struct {
		name string
		p    tracePkt
		want string
	}{
		{"node IP to pod", tracePkt{src: netip.MustParseAddr("172.18.0.2"), dst: xa, proto: "tcp", dport: 8080}, "accept"},
		{"gateway to pod", tracePkt{src: netip.MustParseAddr("10.244.1.1"), dst: xa, proto: "tcp", dport: 8080}, "accept"},
		{"pod to pod, new", tracePkt{src: xb, dst: xa, proto: "tcp", dport: 80}, "drop"},
		{"pod to pod, reply", tracePkt{src: xa, dst: xb, proto: "tcp", dport: 40000, established: true}, "accept"},
		{"other node to pod", tracePkt{src: netip.MustParseAddr("172.18.0.3"), dst: xa, proto: "tcp", dport: 80}, "drop"},
		{"isolated pod egress", tracePkt{src: xa, dst: fixtureIP("y", "a"), proto: "udp", dport: 53}, "drop"}, // x/a egress denied
		{"to unselected pod", tracePkt{src: netip.MustParseAddr(externalIP), dst: fixtureIP("y", "a"), proto: "udp", dport: 53}, "accept"},
	} {
		if got := traceForward(t, nft, tc.p); got != tc.want {
			t.Errorf("%s: %v -> %v: got %s, want %s", tc.name, tc.p.src, tc.p.dst, got, tc.want)
		}
	}
}
