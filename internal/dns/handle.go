package dns

import (
	"bytes"
	"errors"
	"strings"

	"github.com/miekg/dns"
)

var (
	// errDrop: the message gets no response (it is a response itself, or
	// too short to carry an ID).
	errDrop = errors.New("dns: message dropped")
	// errWouldBlock: the answer needs an upstream round trip, which the
	// caller asked not to wait for.
	errWouldBlock = errors.New("dns: answer needs an upstream lookup")
)

// Handle answers one query from the current snapshot of the cluster, and
// through the upstreams for other names when Config.Upstreams is set. It is
// the resolver without sockets: no transport size limit is applied (the UDP
// path truncates). It returns nil when no response must be sent, as for a
// message that is itself a response. Safe for concurrent use.
func (s *Server) Handle(req *dns.Msg) *dns.Msg {
	m, _, err := s.reply(req, true)
	if err != nil {
		return nil
	}
	s.addEDNS(req, m)
	return m
}

// reply builds the response to req without its OPT record. cacheable says
// the response depends only on the question and the current snapshot, so its
// packed form may be served to later queries for the same name and type.
func (s *Server) reply(req *dns.Msg, mayBlock bool) (*dns.Msg, bool, error) {
	if req.Response {
		return nil, false, errDrop
	}
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery {
		return m.SetRcode(req, dns.RcodeNotImplemented), false, nil
	}
	if len(req.Question) != 1 {
		return m.SetRcode(req, dns.RcodeFormatError), false, nil
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		return m.SetRcode(req, dns.RcodeBadVers), false, nil
	}
	q := req.Question[0]
	m.SetReply(req)
	if labels, ok := dns.IsDomainName(q.Name); !ok || labels > 127 || q.Qclass != dns.ClassINET ||
		q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
		m.Rcode = dns.RcodeRefused
		return m, false, nil
	}
	owner := dns.Fqdn(q.Name)
	name := strings.ToLower(owner)
	snap := s.snap.Load()

	if dns.IsSubDomain(s.zone, name) {
		if snap == nil {
			// Not synced with the API yet: an empty zone would hand out
			// NXDOMAINs that clients cache; SERVFAIL makes them retry.
			m.Rcode = dns.RcodeServerFailure
			return m, false, nil
		}
		cq := question{owner: q.Name, name: name, zone: zoneAsAsked(owner, s.zone), qtype: q.Qtype}
		r := snap.resolve(cq, 0)
		m.Authoritative = true // RA stays 0, as CoreDNS answers cluster names
		m.Rcode, m.Answer, m.Extra = r.rcode, r.answer, r.extra
		if r.upstream != "" && s.fwd != nil {
			up := s.fwd.cached(r.upstream, q.Qtype)
			if up == nil {
				if !mayBlock {
					return nil, false, errWouldBlock
				}
				var err error
				if up, err = s.fwd.lookup(r.upstream, q.Qtype); err != nil {
					s.log.Debug("ExternalName target lookup failed", "name", r.upstream, "err", err)
				}
			}
			if up != nil {
				m.Answer = append(m.Answer, up.Answer...)
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{snap.soa(cq.zone)}
		}
		return m, r.upstream == "", nil
	}

	if rz := reverseZone(name); rz != "" && snap != nil {
		cq := question{owner: q.Name, name: name, zone: zoneAsAsked(owner, rz), qtype: q.Qtype}
		if r, ok := snap.reverseAnswer(cq, rz); ok {
			m.Authoritative = true // RA stays 0, as CoreDNS answers cluster names
			m.Answer, m.Extra = r.answer, r.extra
			if len(m.Answer) == 0 {
				m.Ns = []dns.RR{snap.soa(cq.zone)}
			}
			return m, true, nil
		}
	}

	if s.fwd == nil {
		m.Rcode = dns.RcodeRefused
		return m, true, nil
	}
	up := s.fwd.cached(name, q.Qtype)
	if up == nil {
		if !mayBlock {
			return nil, false, errWouldBlock
		}
		var err error
		if up, err = s.fwd.lookup(name, q.Qtype); err != nil {
			s.log.Debug("forward failed", "name", name, "qtype", dns.TypeToString[q.Qtype], "err", err)
			m.Rcode = dns.RcodeServerFailure
			return m, false, nil
		}
	}
	m.Rcode, m.RecursionAvailable = up.Rcode, true
	m.Answer, m.Ns, m.Extra = up.Answer, up.Ns, up.Extra
	for _, rr := range m.Answer {
		// Answer with the question's case, as for cluster names.
		if h := rr.Header(); strings.EqualFold(h.Name, q.Name) {
			h.Name = q.Name
		}
	}
	return m, false, nil
}

// zoneAsAsked returns zone (lowercase FQDN) spelled as at the end of owner,
// which CoreDNS keeps in SRV targets, NS names and the SOA.
func zoneAsAsked(owner, zone string) string {
	if i := len(owner) - len(zone); i >= 0 && strings.EqualFold(owner[i:], zone) {
		return owner[i:]
	}
	return zone
}

// addEDNS echoes an OPT record when the query had one (RFC 6891), with the
// client's buffer size and DO bit, as CoreDNS does.
func (s *Server) addEDNS(req, m *dns.Msg) {
	opt := req.IsEdns0()
	if opt == nil {
		return
	}
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(max(opt.UDPSize(), dns.MinMsgSize))
	o.SetDo(opt.Do())
	m.Extra = append(m.Extra, o)
}

// serveWire answers the raw query b, appending the response to out. On UDP
// the response is truncated to 512 bytes or the query's EDNS0 buffer size.
// It returns errDrop when nothing must be sent, and errWouldBlock when
// mayBlock is false and the answer needs an upstream lookup.
func (s *Server) serveWire(b, out []byte, udp, mayBlock bool) ([]byte, error) {
	var keyBuf [maxWireName + 2]byte
	pq, st := parseQuery(b, keyBuf[:0])
	switch st {
	case parseFast:
		if e := s.wire.get(pq.key); e != nil && e.gen == s.gen() {
			if resp, ok := pq.render(out, b, e, udp); ok {
				return resp, nil
			}
		}
	case parseTooLong:
		return headerReply(b, out, dns.RcodeRefused)
	}
	return s.serveSlow(b, out, &pq, st == parseFast, udp, mayBlock)
}

func (s *Server) serveSlow(b, out []byte, pq *parsedQuery, fast, udp, mayBlock bool) ([]byte, error) {
	switch acceptHeader(b) {
	case acceptDrop:
		return nil, errDrop
	case acceptNotImpl:
		return headerReply(b, out, dns.RcodeNotImplemented)
	case acceptFormErr:
		return headerReply(b, out, dns.RcodeFormatError)
	}
	req := new(dns.Msg)
	if err := req.Unpack(b); err != nil {
		return headerReply(b, out, dns.RcodeFormatError)
	}
	gen := s.gen()
	m, cacheable, err := s.reply(req, mayBlock)
	if err != nil {
		return nil, err
	}
	if cacheable && fast {
		if e := packEntry(m, b[12:pq.qEnd], gen); e != nil {
			s.wire.put(pq.key, e)
			if resp, ok := pq.render(out, b, e, udp); ok {
				return resp, nil
			}
		}
	}
	s.addEDNS(req, m)
	limit := dns.MaxMsgSize
	if udp {
		limit = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			limit = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	m.Compress = true
	resp, err := m.PackBuffer(out[:cap(out)])
	if err != nil || len(resp) > limit {
		m.Truncate(limit)
		m.Compress = true
		if resp, err = m.PackBuffer(out[:cap(out)]); err != nil {
			s.log.Debug("pack response", "err", err)
			return headerReply(b, out, dns.RcodeServerFailure)
		}
	}
	return resp, nil
}

// packEntry packs m (no OPT) and keeps what follows the question, provided
// the question packs to exactly the query's bytes, so the compression
// pointers in the body stay valid for every query with this question.
func packEntry(m *dns.Msg, question []byte, gen uint64) *wireEntry {
	m.Compress = true
	p, err := m.Pack()
	if err != nil || len(p) < 12+len(question) || len(p) > dns.MaxMsgSize {
		return nil
	}
	if !bytes.Equal(p[12:12+len(question)], question) {
		return nil
	}
	return &wireEntry{
		gen:   gen,
		rcode: uint8(m.Rcode),
		aa:    m.Authoritative,
		ra:    m.RecursionAvailable,
		an:    uint16(len(m.Answer)),
		ns:    uint16(len(m.Ns)),
		ar:    uint16(len(m.Extra)),
		body:  bytes.Clone(p[12+len(question):]),
	}
}

func (s *Server) gen() uint64 {
	if snap := s.snap.Load(); snap != nil {
		return snap.gen
	}
	return 0
}
