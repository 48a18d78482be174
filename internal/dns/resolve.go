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

// hit is one (address, port, name) an answer can be built from, the analogue
// of CoreDNS's msg.Service for the kubernetes plugin.
type hit struct {
	addr netip.Addr
	port int32
	name string // SRV target: the Service or endpoint FQDN
}

// resolve answers qtype for name (lowercase FQDN inside s.zone); owner is the
// question's name as asked, so answers keep the client's case.
func (s *snapshot) resolve(owner, name string, qtype uint16, depth int) result {
	rel := strings.TrimSuffix(strings.TrimSuffix(name, s.zone), ".")
	if rel == "" {
		return s.apex(owner, qtype)
	}
	labels := strings.Split(rel, ".")
	n := len(labels)
	switch rel {
	case "dns-version":
		if qtype == dns.TypeTXT {
			return result{answer: []dns.RR{&dns.TXT{Hdr: hdr(owner, dns.TypeTXT, 28800), Txt: []string{DNSSchemaVersion}}}}
		}
		return result{}
	case "ns.dns":
		return result{answer: s.addrRecords(owner, qtype, s.dnsAddrs)}
	case "dns":
		return result{} // empty non-terminal above ns.dns
	}
	kind := labels[n-1]
	if kind != "svc" && kind != "pod" {
		return nxdomain()
	}
	if n <= 2 {
		// <zone>'s svc/pod and any <ns>.svc/pod: CoreDNS treats every
		// namespace as existing and answers NODATA.
		return result{}
	}
	if kind == "pod" {
		if n != 3 {
			return nxdomain()
		}
		addr, ok := podIP(labels[0])
		if !ok {
			return nxdomain()
		}
		return result{answer: s.addrRecords(owner, qtype, []netip.Addr{addr})}
	}

	var endpoint, port, proto string
	switch n {
	case 3:
	case 4:
		endpoint = labels[0]
	case 5:
		// CoreDNS strips the underscores but does not require them.
		port, proto = strings.TrimPrefix(labels[0], "_"), strings.TrimPrefix(labels[1], "_")
	default:
		return nxdomain()
	}
	info := s.services[labels[n-3]+"."+labels[n-2]]
	if info == nil {
		return nxdomain()
	}
	if info.externalName != "" {
		if endpoint != "" {
			return nxdomain()
		}
		return s.externalName(owner, name, qtype, info.externalName, depth)
	}
	hits := info.hits(endpoint, port, proto)
	if len(hits) == 0 {
		return nxdomain()
	}
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		var addrs []netip.Addr
		for _, h := range hits {
			addrs = append(addrs, h.addr)
		}
		return result{answer: s.addrRecords(owner, qtype, addrs)}
	case dns.TypeSRV:
		return s.srv(owner, hits)
	}
	return result{}
}

func (s *snapshot) apex(owner string, qtype uint16) result {
	switch qtype {
	case dns.TypeSOA:
		soa := s.soa()
		soa.Hdr.Name = owner
		return result{answer: []dns.RR{soa}}
	case dns.TypeNS:
		ns := "ns.dns." + s.zone
		r := result{answer: []dns.RR{&dns.NS{Hdr: hdr(owner, dns.TypeNS, s.ttl), Ns: ns}}}
		r.extra = append(s.addrRecords(ns, dns.TypeA, s.dnsAddrs), s.addrRecords(ns, dns.TypeAAAA, s.dnsAddrs)...)
		return r
	}
	return result{}
}

// hits lists what a Service name (optionally an endpoint or a port) stands
// for, following CoreDNS's findServices: endpoints for headless Services and
// endpoint names, ClusterIPs otherwise.
func (info *serviceInfo) hits(endpoint, port, proto string) []hit {
	var hits []hit
	if info.headless || endpoint != "" {
		for _, ep := range info.endpoints {
			if endpoint != "" && endpoint != ep.hostname {
				continue
			}
			for _, p := range ep.ports {
				if matchPort(port, proto, p) {
					hits = append(hits, hit{addr: ep.addr, port: p.port, name: ep.hostname + "." + info.fqdn})
				}
			}
		}
		return hits
	}
	for _, p := range info.ports {
		if !matchPort(port, proto, p) {
			continue
		}
		for _, ip := range info.clusterIPs {
			hits = append(hits, hit{addr: ip, port: p.port, name: info.fqdn})
		}
		if len(info.clusterIPs) == 0 {
			// A Service without ClusterIPs still exists (NODATA, not NXDOMAIN).
			hits = append(hits, hit{port: -1, name: info.fqdn})
		}
	}
	return hits
}

func matchPort(port, proto string, p portInfo) bool {
	return (port == "" || port == p.name) && (proto == "" || proto == p.proto)
}

// srv builds SRV answers with CoreDNS's weights (100 split evenly across all
// hits, at least 1) and the targets' addresses as additional records.
func (s *snapshot) srv(owner string, hits []hit) result {
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
		if k := (srvKey{h.name, h.port}); !seenSRV[k] {
			seenSRV[k] = true
			r.answer = append(r.answer, &dns.SRV{Hdr: hdr(owner, dns.TypeSRV, s.ttl), Priority: 0, Weight: weight, Port: uint16(h.port), Target: h.name})
		}
		if k := (addrKey{h.name, h.addr}); !seenAddr[k] {
			seenAddr[k] = true
			if h.addr.Is4() {
				r.extra = append(r.extra, &dns.A{Hdr: hdr(h.name, dns.TypeA, s.ttl), A: net.IP(h.addr.AsSlice())})
			} else {
				r.extra = append(r.extra, &dns.AAAA{Hdr: hdr(h.name, dns.TypeAAAA, s.ttl), AAAA: net.IP(h.addr.AsSlice())})
			}
		}
	}
	return r
}

// externalName answers an ExternalName Service: a CNAME, followed inside the
// cluster domain, or marked for the upstream resolvers outside it.
func (s *snapshot) externalName(owner, name string, qtype uint16, target string, depth int) result {
	switch qtype {
	case dns.TypeA, dns.TypeAAAA, dns.TypeCNAME:
	default:
		return result{} // CoreDNS: SRV and others give NODATA for ExternalName
	}
	if target == name {
		return result{} // x CNAME x is a loop: no record
	}
	cname := &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, s.ttl), Target: target}
	if qtype == dns.TypeCNAME {
		return result{answer: []dns.RR{cname}}
	}
	if dns.IsSubDomain(s.zone, target) {
		if depth >= 8 {
			return result{}
		}
		next := s.resolve(target, target, qtype, depth+1)
		if len(next.answer) == 0 || next.rcode != dns.RcodeSuccess {
			return result{} // as CoreDNS: the CNAME only with what it leads to
		}
		next.answer = append([]dns.RR{cname}, next.answer...)
		return next
	}
	return result{answer: []dns.RR{cname}, upstream: target}
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

// ptr answers a reverse name for a Service ClusterIP or an endpoint IP;
// ok=false means the IP is not the cluster's.
func (s *snapshot) ptr(owner, name string) (result, bool) {
	addr, ok := reverseAddr(name)
	if !ok {
		return result{}, false
	}
	targets := s.reverse[addr]
	if len(targets) == 0 {
		return result{}, false
	}
	var r result
	for _, t := range targets {
		r.answer = append(r.answer, &dns.PTR{Hdr: hdr(owner, dns.TypePTR, s.ttl), Ptr: t})
	}
	return r, true
}

// soa is the zone's SOA as CoreDNS builds it; it also goes into the
// authority section of every negative answer.
func (s *snapshot) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     hdr(s.zone, dns.TypeSOA, min(s.ttl, 300)),
		Ns:      "ns.dns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
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
