package dns

import (
	"encoding/binary"
)

// The fast path reads the fixed shape of nearly every stub-resolver query
// (header, one uncompressed IN question, at most one OPT) straight from the
// bytes, and answers it from packed bytes; anything else takes the
// miekg/dns path.

const maxWireName = 255 // RFC 1035 2.3.4, including the root label

type parseStatus int

const (
	parseSlow    parseStatus = iota // not the common shape: use the full parser
	parseFast                       // parsedQuery is valid
	parseTooLong                    // question name over 255 bytes or 127 labels
)

type parsedQuery struct {
	qEnd    int    // offset just past the question
	key     []byte // wire qname (case as asked) + qtype
	edns    bool
	udpSize uint16
	do      bool
}

func parseQuery(b []byte, key []byte) (parsedQuery, parseStatus) {
	var pq parsedQuery
	if len(b) < 12 {
		return pq, parseSlow
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0x8000 != 0 || flags&0x7800 != 0 { // response, or opcode != QUERY
		return pq, parseSlow
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return pq, parseSlow
	}
	off, labels := 12, 0
	for {
		if off >= len(b) {
			return pq, parseSlow
		}
		l := int(b[off])
		if l&0xC0 != 0 {
			return pq, parseSlow // compression pointer or extended label type
		}
		need := off - 12 + 1 + l // the name so far with this label
		if l != 0 {
			need++ // and the root label still to come
		}
		if need > maxWireName {
			return pq, parseTooLong
		}
		if off+1+l > len(b) {
			return pq, parseSlow
		}
		// The key keeps the question's case: a cached answer's compression pointers
		// and owner names were packed against that exact question, so a query that
		// differs only in case must not replay it (it is answered and cached anew).
		key = append(key, b[off:off+1+l]...)
		off += 1 + l
		if l == 0 {
			break
		}
		if labels++; labels > 127 {
			return pq, parseTooLong
		}
	}
	if off+4 > len(b) {
		return pq, parseSlow
	}
	qtype, qclass := b[off:off+2], binary.BigEndian.Uint16(b[off+2:])
	if qclass != 1 {
		return pq, parseSlow
	}
	pq.key = append(key, qtype...)
	off += 4
	pq.qEnd = off
	if ar == 1 {
		// OPT: root name, type 41, class = UDP size, TTL = ext-rcode,
		// version, flags; then the options, which we do not use.
		if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != 41 {
			return pq, parseSlow
		}
		pq.edns = true
		pq.udpSize = binary.BigEndian.Uint16(b[off+3:])
		if b[off+6] != 0 { // version: BADVERS on the slow path
			return pq, parseSlow
		}
		pq.do = b[off+7]&0x80 != 0
		rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
		off += 11 + rdlen
	}
	if off != len(b) {
		return pq, parseSlow
	}
	return pq, parseFast
}

// render writes the response to the query b from a cached entry. ok=false
// when it does not fit the UDP limit (the slow path truncates).
func (pq *parsedQuery) render(out, b []byte, e *wireEntry, udp bool) ([]byte, bool) {
	ar := e.ar
	if pq.edns {
		ar++
	}
	f1 := byte(0x80) | b[2]&0x01 // QR, RD copied
	if e.aa {
		f1 |= 0x04
	}
	f2 := b[3]&0x10 | e.rcode&0x0F // CD copied
	if e.ra {
		f2 |= 0x80
	}
	out = append(out[:0], b[0], b[1], f1, f2, 0, 1,
		byte(e.an>>8), byte(e.an), byte(e.ns>>8), byte(e.ns), byte(ar>>8), byte(ar))
	out = append(out, b[12:pq.qEnd]...)
	out = append(out, e.body...)
	limit := 65535
	if udp {
		limit = 512
	}
	if pq.edns {
		size := max(pq.udpSize, 512)
		var do byte
		if pq.do {
			do = 0x80
		}
		out = append(out, 0, 0, 41, byte(size>>8), byte(size), 0, 0, do, 0, 0, 0)
		if udp {
			limit = int(size)
		}
	}
	if len(out) > limit {
		return out[:0], false
	}
	return out, true
}

type acceptAction int

const (
	acceptOK acceptAction = iota
	acceptDrop
	acceptNotImpl
	acceptFormErr
)

// acceptHeader applies the checks miekg/dns's server (and so CoreDNS) makes
// before parsing: responses are dropped, opcodes other than QUERY get
// NOTIMP, and a query must have one question and no more than one answer,
// one authority and two additional records.
func acceptHeader(b []byte) acceptAction {
	if len(b) < 12 {
		return acceptDrop
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0x8000 != 0 {
		return acceptDrop
	}
	if (flags>>11)&0xF != 0 {
		return acceptNotImpl
	}
	qd, an, ns, ar := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd != 1 || an > 1 || ns > 1 || ar > 2 {
		return acceptFormErr
	}
	return acceptOK
}

// headerReply answers with the query's ID, opcode and RD bit, the given
// rcode and empty sections.
func headerReply(b, out []byte, rcode int) ([]byte, error) {
	if len(b) < 12 || b[2]&0x80 != 0 {
		return nil, errDrop
	}
	f1 := 0x80 | b[2]&0x79 // QR, opcode, RD
	return append(out[:0], b[0], b[1], f1, byte(rcode&0x0F), 0, 0, 0, 0, 0, 0, 0, 0), nil
}
