package dnsdiff

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Query is one question asked of both servers.
type Query struct {
	Name string // as sent, case preserved
	Type uint16
	// NoEDNS sends the query without an OPT record (old stub resolvers).
	NoEDNS bool
}

func (q Query) String() string {
	s := q.Name + " " + dns.TypeToString[q.Type]
	if q.NoEDNS {
		s += " (no EDNS)"
	}
	return s
}

// Queries lists what the differential test asks about f (after Apply) in the
// cluster domain zone (e.g. "cluster.local"): every record kind of the
// Kubernetes DNS specification, the negative answers around them, pod
// names, reverse names, search-path expansions and case variations.
func (f *Fixture) Queries(zone string) ([]Query, error) {
	z := dns.Fqdn(zone)
	ns := f.Namespace
	svc := func(s string) string { return s + "." + ns + ".svc." + z }
	var qs []Query
	add := func(name string, types ...uint16) {
		for _, t := range types {
			qs = append(qs, Query{Name: name, Type: t})
		}
	}
	A, AAAA, SRV, PTR, CNAME, TXT, MX, SOA, NS, ANY := dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeCNAME, dns.TypeTXT, dns.TypeMX, dns.TypeSOA, dns.TypeNS, dns.TypeANY

	// Every Service, every common type.
	for _, s := range f.Services {
		add(svc(s.Name), A, AAAA, SRV, CNAME, TXT, MX)
	}
	// Named ports, with and without underscores, matching and not.
	add("_http._tcp."+svc("web"), SRV, A)
	add("_https._tcp."+svc("web"), SRV)
	add("_http._udp."+svc("web"), SRV)
	add("_nope._tcp."+svc("web"), SRV)
	add("http.tcp."+svc("web"), SRV)
	add("_dns._udp."+svc("resolver"), SRV)
	add("_dns._tcp."+svc("resolver"), SRV)
	add("_dns-tcp._tcp."+svc("resolver"), SRV)
	add("_diameter._sctp."+svc("metrics"), SRV)
	add("_grpc._tcp."+svc("metrics"), SRV)
	add("_mysql._tcp."+svc("db"), SRV, A)
	add("_redis._tcp."+svc("cache"), SRV)
	add("_http._tcp."+svc("mixed"), SRV)
	add("_metrics._tcp."+svc("mixed"), SRV)
	add("_grpc._tcp."+svc("multislice"), SRV)
	add("_http._tcp."+svc("v6"), SRV)
	add("_http._tcp."+svc("dual"), SRV)
	add("_http._tcp."+svc("empty"), SRV)
	add("_http._tcp."+svc("ext"), SRV)
	add("_._tcp."+svc("api"), SRV)
	// ExternalName with port or endpoint labels, pointing at or below itself.
	add("_http._tcp."+svc("ext"), A, CNAME)
	add("_._tcp."+svc("ext"), A)
	add("_http._tcp."+svc("ext-internal"), A, SRV)
	add("x."+svc("ext-internal"), A)
	add("x."+svc("ext-below"), A)
	// Wildcards (CoreDNS once answered them; the spec does not).
	add("*."+ns+".svc."+z, A)
	add("_*._tcp."+svc("web"), SRV)
	add("*.*."+svc("web"), SRV)
	add("*."+svc("db"), A)

	// Endpoint names: hostnames, dashed IPs, not-ready, IPv6, unknown.
	for _, e := range []string{"web-0", "10-244-250-11", "web-2", "10-244-250-12", "nope"} {
		add(e+"."+svc("web"), A, AAAA, SRV)
	}
	for _, e := range []string{"db-0", "db-1", "db-2", "db-3", "10-244-250-30"} {
		add(e+"."+svc("db"), A, AAAA, SRV)
	}
	for _, e := range []string{"10-244-250-40", "10-244-250-42"} {
		add(e+"."+svc("cache"), A, SRV)
	}
	for _, e := range []string{"m-0", "10-244-250-51", "m-2", "m-3"} {
		add(e+"."+svc("mixed"), A, SRV)
	}
	add("np-0."+svc("noports"), A, SRV)
	add("10-244-250-61."+svc("noports"), A)
	add("v6-0."+svc("v6"), A, AAAA, SRV)
	add("fd00-10-244-fa--71."+svc("v6"), AAAA)
	add("fd00-10-244-fa--0."+svc("v6"), AAAA)
	add("d-0."+svc("dual"), A, AAAA, SRV)
	add("ms-2."+svc("multislice"), A, SRV)
	add("shared."+svc("shared-b"), A)
	add("10-244-250-100."+svc("shared-a"), A)
	add("nr-0."+svc("notready"), A)
	add("x."+svc("ext"), A)
	add("x."+svc("api"), A)

	// Case variations: answers must keep the question's case.
	add("WEB."+strings.ToUpper(ns)+".SVC."+strings.ToUpper(z), A, SRV)
	add("Web."+ns+".Svc.Cluster.Local.", A)
	add("_HTTP._TCP.Web."+ns+".svc."+z, SRV)
	add("DB-0.Db."+ns+".svc."+z, A)
	// The zone as asked goes into SRV targets and the SOA of negative answers.
	add("_MySQL._TCP.db."+ns+".svc.Cluster.Local.", SRV)
	add("_http._tcp.web."+ns+".SVC.CLUSTER.LOCAL.", SRV)
	add("10-244-1-5."+strings.ToUpper(ns)+".POD.Cluster.Local.", SRV, A)
	add("NOPE."+ns+".svc.CLUSTER.local.", A, TXT)
	add("Cluster.Local.", SOA, NS)
	add("Ext."+ns+".svc."+z, A)
	add("Ext-Internal."+ns+".svc."+z, A)

	// Pods (pods insecure): a-b-c-d names in any namespace.
	add("10-244-1-5."+ns+".pod."+z, A, AAAA, SRV)
	add("10-244-1-5.nonexistent-ns.pod."+z, A)
	add("fd00-10-244--5."+ns+".pod."+z, AAAA, A)
	add("1-2-3."+ns+".pod."+z, A)
	add("256-1-1-1."+ns+".pod."+z, A)
	add("010-244-001-005."+ns+".pod."+z, A)
	add("x.10-244-1-5."+ns+".pod."+z, A, SRV, TXT)
	add("_x._y.10-244-1-5."+ns+".pod."+z, A)
	add("a.b.c.10-244-1-5."+ns+".pod."+z, A)
	add("fd00-10-244--5."+ns+".pod."+z, SRV)
	add("10-244-1-5."+ns+".pod."+z, TXT, MX)
	add("10-244-1-5.nonexistent-ns.pod."+z, SRV, TXT)
	add("nonexistent-ns.pod."+z, A)
	add("kube-public.pod."+z, A)
	add("web."+ns+".pod."+z, A)
	add(ns+".pod."+z, A)
	add("pod."+z, A)

	// The zone itself and the names the specification defines.
	add(z, SOA, NS, A, AAAA, TXT, ANY)
	add("dns-version."+z, TXT, A)
	add("DNS-Version."+z, TXT)
	add("ns.dns."+z, A, AAAA)
	add("dns."+z, A)
	add("svc."+z, A, SRV)
	add(ns+".svc."+z, A, SRV)
	add("nonexistent-ns.svc."+z, A, TXT, SRV)
	add("kube-public.svc."+z, A, TXT)
	add("kube-node-lease.svc."+z, A)
	add("default.svc."+z, A, TXT)
	add("kubernetes.nonexistent-ns.svc."+z, A)
	add("_https._tcp.kubernetes.nonexistent-ns.svc."+z, SRV)
	add("svc."+z, TXT)
	add("pod."+z, TXT, SRV)
	add("dns-version."+z, AAAA, SRV, MX)
	add("dns."+z, AAAA, TXT, SOA)
	add("ns.dns."+z, TXT, MX, SRV, CNAME)
	// SOA below the apex is NODATA, also for names that do not exist.
	add("web."+ns+".svc."+z, SOA)
	add("nope."+ns+".svc."+z, SOA)
	add("foo."+z, SOA)
	add("kube-dns.kube-system.svc."+z, A, SRV)
	add("kubernetes.default.svc."+z, A, SRV)
	add("_https._tcp.kubernetes.default.svc."+z, SRV)

	// Negative answers: unknown names, wrong shapes, search-path expansions
	// of external names (what a pod's resolver tries before the real name).
	add("nope."+ns+".svc."+z, A, AAAA)
	add("web.nonexistent-ns.svc."+z, A)
	add("a.b.c.d.web."+ns+".svc."+z, A)
	add("web."+ns+".cluster."+z, A)
	add("foo."+z, A)
	add("example.com."+ns+".svc."+z, A, AAAA)
	add("example.com.svc."+z, A, AAAA)
	add("example.com."+z, A, AAAA)
	add("www.example.com."+ns+".svc."+z, A)

	// Outside the zone: the Corefile has no forward plugin, knet no upstream.
	add("example.com.", A)

	// Reverse names: ClusterIPs, endpoint IPs (one shared by two Services,
	// one not ready), IPv6 endpoints, unknown IPs, partial names.
	for _, name := range []string{"web", "metrics"} {
		ip, err := f.ClusterIP(name)
		if err != nil {
			return nil, err
		}
		add(reverse(ip), PTR)
	}
	for _, ip := range []string{v4(10), v4(11), v4(100), v4(30), v4(52), v6(0x70), v6(0x80), "10.244.250.250", "10.96.255.254"} {
		add(reverse(netip.MustParseAddr(ip)), PTR)
	}
	add("250.244.10.in-addr.arpa.", PTR)
	add("10.in-addr.arpa.", PTR, SOA)
	// Reverse zones: the kubernetes plugin answers SOA (NODATA with the
	// zone's SOA below the apex) and the apex itself; the rest falls through.
	webIP, _ := f.ClusterIP("web")
	add(reverse(webIP), SOA, TXT, A)
	add(reverse(netip.MustParseAddr(v6(0x70))), SOA)
	add("in-addr.arpa.", SOA, NS, A, PTR, TXT)
	add("ip6.arpa.", SOA, AAAA)
	add("IN-ADDR.Arpa.", SOA)
	add("0.10.in-addr.arpa.", SOA)

	// Old stub resolvers send no EDNS.
	qs = append(qs,
		Query{Name: svc("web"), Type: A, NoEDNS: true},
		Query{Name: "_http._tcp." + svc("dual"), Type: SRV, NoEDNS: true},
		Query{Name: "nope." + ns + ".svc." + z, Type: A, NoEDNS: true},
	)
	return qs, nil
}

func reverse(a netip.Addr) string {
	name, _ := dns.ReverseAddr(a.String())
	return name
}

// Exchange sends q to server ("ip:port") over UDP, retrying over TCP when the
// answer is truncated, as a stub resolver does.
func Exchange(server string, q Query, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(q.Name, q.Type)
	m.RecursionDesired = true
	if !q.NoEDNS {
		m.SetEdns0(1232, false)
	}
	c := &dns.Client{Net: "udp", Timeout: timeout}
	r, _, err := c.Exchange(m, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s to %s: %w", q, server, err)
	}
	return r, nil
}

// Options say which differences Diff ignores.
type Options struct {
	// IgnoreTTL compares records without their TTLs (a cache counts them
	// down); the SOA serial is always ignored (it is a build time).
	IgnoreTTL bool
	// IgnoreCase compares names case-insensitively: CoreDNS's cache serves
	// an entry with the case of the question that filled it.
	IgnoreCase bool
}

// Diff compares a response from knet with one from the reference server and
// returns one line per difference, empty when they agree: rcode, the AA, TC
// and RA flags, EDNS presence, and the answer, authority and additional sections
// as sets of records (order within a section is not compared: both servers
// and clients treat an RRset as unordered).
func Diff(knet, ref *dns.Msg, opt Options) []string {
	var out []string
	if a, b := dns.RcodeToString[knet.Rcode], dns.RcodeToString[ref.Rcode]; a != b {
		out = append(out, fmt.Sprintf("rcode: knet %s, reference %s", a, b))
	}
	flag := func(name string, a, b bool) {
		if a != b {
			out = append(out, fmt.Sprintf("%s flag: knet %v, reference %v", name, a, b))
		}
	}
	flag("AA", knet.Authoritative, ref.Authoritative)
	flag("TC", knet.Truncated, ref.Truncated)
	flag("RA", knet.RecursionAvailable, ref.RecursionAvailable)
	flag("EDNS", knet.IsEdns0() != nil, ref.IsEdns0() != nil)
	section := func(name string, a, b []dns.RR) {
		na, nb := normalize(a, opt), normalize(b, opt)
		onlyA, onlyB := minus(na, nb), minus(nb, na)
		if len(onlyA) == 0 && len(onlyB) == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s: knet only %s; reference only %s", name, list(onlyA), list(onlyB)))
	}
	section("answer", knet.Answer, ref.Answer)
	section("authority", knet.Ns, ref.Ns)
	section("additional", knet.Extra, ref.Extra)
	return out
}

// normalize renders records as sorted zone-file lines without OPT, with the
// SOA serial (and the TTLs when asked) zeroed.
func normalize(rrs []dns.RR, opt Options) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		rr = dns.Copy(rr)
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Serial = 0
		}
		if opt.IgnoreTTL {
			rr.Header().Ttl = 0
		}
		line := strings.ReplaceAll(rr.String(), "\t", " ")
		if opt.IgnoreCase {
			line = strings.ToLower(line)
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

// minus returns the lines of a that are not in b, counting duplicates.
func minus(a, b []string) []string {
	left := make(map[string]int, len(b))
	for _, s := range b {
		left[s]++
	}
	var out []string
	for _, s := range a {
		if left[s] > 0 {
			left[s]--
			continue
		}
		out = append(out, s)
	}
	return out
}

func list(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return "[" + strings.Join(s, " | ") + "]"
}
