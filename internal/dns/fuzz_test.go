package dns

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandle feeds raw bytes to the socket path (UDP and TCP, blocking and
// not) and, when they parse, to Handle: nothing may panic, and whatever is
// sent back must be a DNS message answering the same ID.
func FuzzHandle(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, false},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV, true},
		{"10-244-0-1.default.pod.cluster.local.", dns.TypeAAAA, false},
		{"20.0.96.10.in-addr.arpa.", dns.TypePTR, true},
		{"example.com.", dns.TypeA, false},
		{"dns-version.cluster.local.", dns.TypeTXT, true},
		{"cluster.local.", dns.TypeTXT, false},
		{"x.10-244-0-1.default.pod.cluster.local.", dns.TypeSRV, true},
		{"_x._tcp.ext.default.svc.cluster.local.", dns.TypeA, false},
		{"self.default.svc.cluster.local.", dns.TypeCNAME, false},
		{"10.in-addr.arpa.", dns.TypeSOA, true},
		{"IN-ADDR.ARPA.", dns.TypeNS, false},
		{"_HTTP._TCP.WEB.DEFAULT.SVC.CLUSTER.LOCAL.", dns.TypeSRV, true},
		{"web.nope-ns.svc.cluster.local.", dns.TypeA, false},
		{`a\.b.web.default.svc.cluster.local.`, dns.TypeA, false},
	} {
		m := query(q.name, q.qtype)
		if q.edns {
			m.SetEdns0(1232, true)
		}
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1})
	s := newTestServer(f, Config{}, clusterObjects()...)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, udp := range []bool{true, false} {
			for _, block := range []bool{true, false} {
				resp, err := s.serveWire(b, nil, udp, block)
				if err != nil {
					continue
				}
				if len(resp) < 12 || resp[0] != b[0] || resp[1] != b[1] || resp[2]&0x80 == 0 {
					t.Fatalf("response %x to %x is not a reply with the same ID", resp, b)
				}
				if udp && len(resp) > 65535 {
					t.Fatalf("response of %d bytes", len(resp))
				}
			}
		}
		req := new(dns.Msg)
		if req.Unpack(b) == nil {
			if m := s.Handle(req); m != nil {
				if _, err := m.Pack(); err != nil && m.Rcode <= 15 {
					t.Fatalf("Handle's response does not pack: %v\n%v", err, m)
				}
			}
		}
	})
}
