package dns

import (
	"math"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// DNSSchemaVersion is the version of the Kubernetes DNS specification that
// dns-version.<zone> TXT announces.
const DNSSchemaVersion = "1.1.0"

// result is the cluster zone's answer to one question, before it becomes a
// message.
type result struct {
	rcode  int
	answer []dns.RR
	extra  []dns.RR
	// upstream is set when the answer ends in a CNAME to a name outside the
	// cluster domain (ExternalName): the target's records come from the
	// upstream resolvers.
	upstream string
}

// hit is one thing a name stands for, the analogue of CoreDNS's msg.Service
// in its kubernetes plugin: an address with a port and the name that SRV
// targets, or the target of an ExternalName Service.
type hit struct {
	addr   netip.Addr
	port   int32  // -1: no port (no SRV record)
	target string // SRV target without the zone: "web.ns.svc.", "db-0.db.ns.svc.", "10-244-1-5.ns.pod."
	cname  string // ExternalName target (FQDN); addr is unset then
}

// question is one name being answered.
type question struct {
	owner string // the name as asked: answers keep its case
	name  string // lowercase FQDN
	// zone is the cluster zone as spelled at the end of owner: CoreDNS
	// builds SRV targets, NS names and the SOA from it.
	zone  string
	qtype uint16
}

// maxCNAMEChain is how many CNAMEs an answer may carry before the chain is
// dropped, as CoreDNS's backend lookup (maxCnameChainLength + 1).
const maxCNAMEChain = 11

// resolve answers q (a name inside s.zone) with CoreDNS's kubernetes plugin
// rules: SOA exists only at the apex and any other name gives NODATA without
// a lookup; TXT exists only at dns-version and is NODATA for names with
// records and NXDOMAIN for all others; ns.dns answers the kube-dns
// addresses; every other type is NXDOMAIN for names the plugin cannot
// parse or find and NODATA for names without records of that type.
// chain holds the CNAMEs already followed.
func (s *snapshot) resolve(q question, chain int) result {
	rel := strings.TrimSuffix(strings.TrimSuffix(q.name, s.zone), ".")
	switch {
	case q.qtype == dns.TypeSOA:
		if rel == "" {
			return result{answer: []dns.RR{s.soa(q.zone)}}
		}
		return result{}
	case q.qtype == dns.TypeTXT:
		if rel == "dns-version" {
			return result{answer: []dns.RR{&dns.TXT{Hdr: hdr(q.owner, dns.TypeTXT, 28800), Txt: []string{DNSSchemaVersion}}}}
		}
		if hits, ok := s.records(rel); ok && len(hits) > 0 {
			return result{}
		}
		return nxdomain()
	case rel == "":
		if q.qtype == dns.TypeNS {
			return s.nsRecords(q.owner, q.zone)
		}
		return result{}
	case rel == "ns.dns":
		return result{answer: s.addrRecords(q.owner, q.qtype, s.dnsAddrs)}
	}
	hits, ok := s.records(rel)
	if !ok {
		return nxdomain()
	}
	switch q.qtype {
	case dns.TypeA, dns.TypeAAAA:
		return s.addresses(q, hits, chain)
	case dns.TypeSRV:
		return s.srv(q, hits)
	case dns.TypeCNAME:
		// CoreDNS answers the first record's target, without a loop check.
		if len(hits) > 0 && hits[0].cname != "" {
			return result{answer: []dns.RR{&dns.CNAME{Hdr: hdr(q.owner, dns.TypeCNAME, s.ttl), Target: hits[0].cname}}}
		}
	}
	return result{}
}

// records is CoreDNS's Records for a name relative to the zone (lowercase,
// no trailing dot): what the name stands for, and ok=false for NXDOMAIN
// (also for the apex, ""). Its shapes are
//
//	<service>.<ns>.svc  <endpoint>.<service>.<ns>.svc  _<port>._<proto>.<service>.<ns>.svc
//	<a-b-c-d>.<ns>.pod  (with up to two more labels in front, ignored)
//
// and "svc", "pod" and "<ns>.svc"/"<ns>.pod" of an existing namespace,
// which exist without records.
func (s *snapshot) records(rel string) ([]hit, bool) {
	// SplitDomainName keeps escaped dots inside their label, as CoreDNS parses.
	labels := dns.SplitDomainName(rel)
	n := len(labels)
	if n == 0 {
		return nil, false // the apex: CoreDNS's Records has nothing for it
	}
	kind := labels[n-1]
	if (kind != "svc" && kind != "pod") || n > 5 {
		return nil, false
	}
	if n == 1 {
		return nil, true
	}
	ns := labels[n-2]
	if !s.namespaces.has(ns) {
		return nil, false
	}
	if n == 2 {
		return nil, true
	}
	if kind == "pod" {
		// CoreDNS reads only the pod label and ignores the endpoint or
		// port labels in front of it.
		pod := labels[n-3]
		addr, ok := podIP(pod)
		if !ok {
			return nil, false
		}
		return []hit{{addr: addr, port: 0, target: pod + "." + ns + ".pod."}}, true
	}
	var endpoint, port, proto string
	switch n {
	case 4:
		endpoint = labels[0]
	case 5:
		// CoreDNS strips the underscores but does not require them.
		port, proto = strings.TrimPrefix(labels[0], "_"), strings.TrimPrefix(labels[1], "_")
	}
	key := labels[n-3] + "." + ns
	info, _ := s.services.getHashed(stringHash{}.hash(key), key)
	if info == nil {
		return nil, false
	}
	if info.externalName != "" {
		// An ExternalName has no endpoints and no ports to select.
		if endpoint != "" || port != "" || proto != "" {
			return nil, false
		}
		return []hit{{cname: info.externalName}}, true
	}
	return info.hits(endpoint, port, proto)
}

// hits lists what a Service name (optionally an endpoint or a port) stands
// for, following CoreDNS's findServices: endpoints for headless Services and
// endpoint names, ClusterIPs otherwise. ok=false means no endpoint or port
// matched (NXDOMAIN); a matching port of a Service without ClusterIPs is
// ok without hits (NODATA).
func (info *serviceInfo) hits(endpoint, port, proto string) ([]hit, bool) {
	var hits []hit
	if info.headless || endpoint != "" {
		for _, ep := range info.endpoints {
			if endpoint != "" && endpoint != ep.hostname {
				continue
			}
			for _, p := range ep.ports {
				if matchPort(port, proto, p) {
					hits = append(hits, hit{addr: ep.addr, port: p.port, target: ep.hostname + "." + info.rel})
				}
			}
		}
		return hits, len(hits) > 0
	}
	ok := false
	for _, p := range info.ports {
		if !matchPort(port, proto, p) {
			continue
		}
		ok = true
		for _, ip := range info.clusterIPs {
			hits = append(hits, hit{addr: ip, port: p.port, target: info.rel})
		}
	}
	return hits, ok
}

func matchPort(port, proto string, p portInfo) bool {
	return (port == "" || port == p.name) && (proto == "" || proto == p.proto)
}

// addresses answers A or AAAA from hits, following ExternalName CNAMEs
// inside the cluster domain and marking one outside it for the upstreams.
func (s *snapshot) addresses(q question, hits []hit, chain int) result {
	var r result
	var addrs []netip.Addr
	for _, h := range hits {
		if h.cname == "" {
			addrs = append(addrs, h.addr)
			continue
		}
		if r2, ok := s.externalName(q, h.cname, chain); ok {
			r.answer = append(r.answer, r2.answer...)
			r.extra = append(r.extra, r2.extra...)
			if r2.upstream != "" {
				r.upstream = r2.upstream
			}
		}
	}
	r.answer = append(r.answer, s.addrRecords(q.owner, q.qtype, addrs)...)
	return r
}

// externalName is one ExternalName CNAME in an A or AAAA answer: followed
// inside the cluster domain (kept only when it leads to records), marked for
// the upstream resolvers outside it. ok=false drops it, as CoreDNS drops a
// CNAME to the name itself or below it, and chains that are too long.
func (s *snapshot) externalName(q question, target string, chain int) (result, bool) {
	if target == q.name || dns.IsSubDomain(q.name, target) || chain+1 > maxCNAMEChain {
		return result{}, false
	}
	cname := &dns.CNAME{Hdr: hdr(q.owner, dns.TypeCNAME, s.ttl), Target: target}
	if !dns.IsSubDomain(s.zone, target) {
		return result{answer: []dns.RR{cname}, upstream: target}, true
	}
	// CoreDNS follows the target with the zone spelled as in the first
	// question.
	next := s.resolve(question{owner: target, name: target, zone: q.zone, qtype: q.qtype}, chain+1)
	if next.rcode != dns.RcodeSuccess || len(next.answer) == 0 {
		return result{}, false
	}
	next.answer = append([]dns.RR{cname}, next.answer...)
	return next, true
}

// srv builds SRV answers with CoreDNS's weights (100 split evenly across all
// non-ExternalName hits, at least 1), targets ending in the zone as asked,
// and the targets' addresses as additional records.
func (s *snapshot) srv(q question, all []hit) result {
	var hits []hit
	for _, h := range all {
		if h.cname == "" {
			hits = append(hits, h)
		}
	}
	if len(hits) == 0 {
		return result{}
	}
	weight := uint16(math.Floor(100.0 / float64(len(hits))))
	if weight == 0 {
		weight = 1
	}
	type srvKey struct {
		name string
		port int32
	}
	type addrKey struct {
		name string
		addr netip.Addr
	}
	seenSRV := make(map[srvKey]bool)
	seenAddr := make(map[addrKey]bool)
	var r result
	for _, h := range hits {
		if h.port < 0 || !h.addr.IsValid() {
			continue
		}
		target := h.target + q.zone
		if k := (srvKey{target, h.port}); !seenSRV[k] {
			seenSRV[k] = true
			r.answer = append(r.answer, &dns.SRV{Hdr: hdr(q.owner, dns.TypeSRV, s.ttl), Priority: 0, Weight: weight, Port: uint16(h.port), Target: target})
		}
		if k := (addrKey{target, h.addr}); !seenAddr[k] {
			seenAddr[k] = true
			if h.addr.Is4() {
				r.extra = append(r.extra, &dns.A{Hdr: hdr(target, dns.TypeA, s.ttl), A: net.IP(h.addr.AsSlice())})
			} else {
				r.extra = append(r.extra, &dns.AAAA{Hdr: hdr(target, dns.TypeAAAA, s.ttl), AAAA: net.IP(h.addr.AsSlice())})
			}
		}
	}
	return r
}

// nsRecords answers NS at a zone's apex (zone as asked) as CoreDNS does in a
// cluster, where its own pod is an endpoint of kube-dns: the kube-dns
// Service's name, with its ClusterIPs as glue.
func (s *snapshot) nsRecords(owner, zone string) result {
	if len(s.dnsAddrs) == 0 {
		return result{}
	}
	ns := "kube-dns.kube-system.svc." + zone
	r := result{answer: []dns.RR{&dns.NS{Hdr: hdr(owner, dns.TypeNS, s.ttl), Ns: ns}}}
	r.extra = append(s.addrRecords(ns, dns.TypeA, s.dnsAddrs), s.addrRecords(ns, dns.TypeAAAA, s.dnsAddrs)...)
	return r
}

func (s *snapshot) addrRecords(owner string, qtype uint16, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() || seen[a] {
			continue
		}
		seen[a] = true
		switch {
		case qtype == dns.TypeA && a.Is4():
			rrs = append(rrs, &dns.A{Hdr: hdr(owner, dns.TypeA, s.ttl), A: net.IP(a.AsSlice())})
		case qtype == dns.TypeAAAA && a.Is6():
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, s.ttl), AAAA: net.IP(a.AsSlice())})
		}
	}
	return rrs
}

// Reverse zones: CoreDNS's kubernetes plugin serves them next to the
// cluster domain in the default Corefile, falling through to the next
// plugin (forward) for what it cannot answer.
const (
	reverseZone4 = "in-addr.arpa."
	reverseZone6 = "ip6.arpa."
)

// reverseZone returns the reverse zone name (lowercase FQDN) is in, or "".
func reverseZone(name string) string {
	for _, z := range []string{reverseZone4, reverseZone6} {
		if dns.IsSubDomain(z, name) {
			return z
		}
	}
	return ""
}

// reverseAnswer answers q inside reverse zone rz as CoreDNS's kubernetes
// plugin with `fallthrough in-addr.arpa ip6.arpa`: PTR for Service and
// endpoint IPs, SOA at the apex and NODATA with the SOA for SOA queries
// below it, NS and NODATA at the apex. ok=false means CoreDNS falls through
// (to its upstreams), as for unknown IPs and every other name.
func (s *snapshot) reverseAnswer(q question, rz string) (result, bool) {
	apex := q.name == rz
	switch q.qtype {
	case dns.TypePTR:
		if apex {
			return result{}, true
		}
		addr, ok := reverseAddr(q.name)
		if !ok {
			return result{}, false
		}
		targets := s.ptrTargets(addr)
		if len(targets) == 0 {
			return result{}, false
		}
		var r result
		for _, t := range targets {
			r.answer = append(r.answer, &dns.PTR{Hdr: hdr(q.owner, dns.TypePTR, s.ttl), Ptr: t})
		}
		return r, true
	case dns.TypeSOA:
		if apex {
			return result{answer: []dns.RR{s.soa(q.zone)}}, true
		}
		return result{}, true
	case dns.TypeTXT:
		return result{}, false
	}
	if !apex {
		return result{}, false
	}
	if q.qtype == dns.TypeNS {
		return s.nsRecords(q.owner, q.zone), true
	}
	return result{}, true
}

// soa is the SOA of zone (the cluster zone or a reverse zone, spelled as
// the client did) as CoreDNS builds it; it also goes into the authority
// section of every negative answer.
func (s *snapshot) soa(zone string) *dns.SOA {
	return &dns.SOA{
		Hdr:     hdr(zone, dns.TypeSOA, min(s.ttl, 300)),
		Ns:      "ns.dns." + zone,
		Mbox:    "hostmaster." + zone,
		Serial:  s.serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

func nxdomain() result { return result{rcode: dns.RcodeNameError} }

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// podIP decodes a pods-insecure name: 10-0-0-1 or fd00--1 (dashes for
// colons), as CoreDNS does.
func podIP(label string) (netip.Addr, bool) {
	var s string
	if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
		s = strings.ReplaceAll(label, "-", ".")
	} else {
		s = strings.ReplaceAll(label, "-", ":")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// reverseAddr parses a complete in-addr.arpa or ip6.arpa name (lowercase FQDN).
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
		return a, err == nil
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, p := range parts {
			if len(p) != 1 {
				return netip.Addr{}, false
			}
			v := strings.IndexByte("0123456789abcdef", p[0])
			if v < 0 {
				return netip.Addr{}, false
			}
			// parts[0] is the lowest nibble of the last byte.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b).Unmap(), true
	}
	return netip.Addr{}, false
}
