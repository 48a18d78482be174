package dns

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// exchangeWire sends m through the socket path (serveWire) and parses the
// bytes a client would receive.
func exchangeWire(t *testing.T, s *Server, m *dns.Msg, udp bool) (*dns.Msg, int) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.serveWire(b, nil, udp, true)
	if err != nil {
		t.Fatalf("serveWire: %v", err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("response does not parse: %v", err)
	}
	return r, len(resp)
}

func bigHeadless(n int) []runtime.Object {
	var eps []ep
	for i := range n {
		eps = append(eps, ep{ip: fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)})
	}
	return []runtime.Object{
		service("default", "big", v1.ClusterIPNone, withPort("http", v1.ProtocolTCP, 80)),
		endpointSlice("default", "big", "big-1", discoveryv1.AddressTypeIPv4, []slicePort{{"http", v1.ProtocolTCP, 80}}, eps...),
	}
}

func TestUDPTruncation(t *testing.T) {
	s := newTestServer(t, Config{}, bigHeadless(100)...)
	name := "big.default.svc.cluster.local."

	for _, round := range []string{"miss", "cached"} {
		r, size := exchangeWire(t, s, query(name, dns.TypeA), true)
		if !r.Truncated || size > 512 || len(r.Answer) >= 100 {
			t.Errorf("%s: plain UDP: TC=%v size=%d answers=%d, want TC, <=512 bytes, fewer than 100", round, r.Truncated, size, len(r.Answer))
		}
		q := query(name, dns.TypeA)
		q.SetEdns0(4096, false)
		r, size = exchangeWire(t, s, q, true)
		if r.Truncated || len(r.Answer) != 100 || size > 4096 {
			t.Errorf("%s: EDNS0 4096: TC=%v size=%d answers=%d, want all 100 untruncated", round, r.Truncated, size, len(r.Answer))
		}
		q = query(name, dns.TypeA)
		q.SetEdns0(1232, false)
		r, size = exchangeWire(t, s, q, true)
		if !r.Truncated || size > 1232 || len(r.Answer) < 50 {
			t.Errorf("%s: EDNS0 1232: TC=%v size=%d answers=%d, want TC within 1232 bytes", round, r.Truncated, size, len(r.Answer))
		}
		if r.IsEdns0() == nil {
			t.Errorf("%s: truncated EDNS answer lost its OPT record", round)
		}
		r, _ = exchangeWire(t, s, query(name, dns.TypeA), false)
		if r.Truncated || len(r.Answer) != 100 {
			t.Errorf("%s: TCP: TC=%v answers=%d, want all 100", round, r.Truncated, len(r.Answer))
		}
	}
}

func TestEDNS(t *testing.T) {
	s := newTestServer(t, Config{}, clusterObjects()...)
	for _, round := range []string{"miss", "cached"} {
		q := query("web.default.svc.cluster.local.", dns.TypeA)
		q.SetEdns0(1400, true)
		r, _ := exchangeWire(t, s, q, true)
		opt := r.IsEdns0()
		if opt == nil {
			t.Fatalf("%s: OPT not echoed", round)
		}
		if opt.UDPSize() != 1400 || !opt.Do() || opt.Version() != 0 {
			t.Errorf("%s: OPT = size %d do %v version %d, want 1400 true 0", round, opt.UDPSize(), opt.Do(), opt.Version())
		}
		if len(r.Answer) != 1 {
			t.Errorf("%s: answers = %v", round, r.Answer)
		}
		r, _ = exchangeWire(t, s, query("web.default.svc.cluster.local.", dns.TypeA), true)
		if r.IsEdns0() != nil {
			t.Errorf("%s: OPT in the answer to a query without one", round)
		}
	}
	q := query("web.default.svc.cluster.local.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	r, _ := exchangeWire(t, s, q, true)
	if r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil {
		t.Errorf("EDNS version 1: rcode %s, OPT %v; want BADVERS with an OPT", dns.RcodeToString[r.Rcode], r.IsEdns0())
	}
}

func TestCaseThroughCache(t *testing.T) {
	s := newTestServer(t, Config{}, clusterObjects()...)
	for _, name := range []string{"web.default.svc.cluster.local.", "WEB.Default.svc.cluster.local.", "web.DEFAULT.SVC.CLUSTER.LOCAL."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeSRV} {
			r, _ := exchangeWire(t, s, query(name, qt), true)
			if r.Question[0].Name != name || len(r.Answer) == 0 || r.Answer[0].Header().Name != name {
				t.Errorf("%s %s: question %q, answer %v; want the question's case everywhere", name, dns.TypeToString[qt], r.Question[0].Name, r.Answer)
			}
		}
	}
}

// TestAnswerDoesNotDependOnEarlierQueries: a query that differs from an earlier one only in
// case gets the same bytes as it would from a fresh server (the cache once replayed the first
// asker's compression pointers into the second question).
func TestAnswerDoesNotDependOnEarlierQueries(t *testing.T) {
	first := query("_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV)
	second := query("_HTTP._TCP.Web.default.svc.cluster.local.", dns.TypeSRV)
	fresh := newTestServer(t, Config{}, clusterObjects()...)
	want, _ := exchangeWire(t, fresh, second, true)
	warm := newTestServer(t, Config{}, clusterObjects()...)
	exchangeWire(t, warm, first, true)
	got, _ := exchangeWire(t, warm, second, true)
	if got.String() != want.String() {
		t.Errorf("answer after a differently-cased query:\n%s\nwant (fresh server):\n%s", got, want)
	}
}

func TestSnapshotChangeInvalidatesCache(t *testing.T) {
	objs := clusterObjects()
	s := newTestServer(t, Config{}, objs...)
	name := "web.default.svc.cluster.local."
	r, _ := exchangeWire(t, s, query(name, dns.TypeA), true)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.20" {
		t.Fatalf("before: %v", r.Answer)
	}
	web := service("default", "web", "10.96.0.99", withPort("http", v1.ProtocolTCP, 80))
	s.setSnapshot([]*v1.Namespace{namespace("default")}, []*v1.Service{web}, nil)
	r, _ = exchangeWire(t, s, query(name, dns.TypeA), true)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.99" {
		t.Errorf("after the Service changed: %v, want 10.96.0.99", r.Answer)
	}
	s.setSnapshot([]*v1.Namespace{namespace("default")}, nil, nil)
	r, _ = exchangeWire(t, s, query(name, dns.TypeA), true)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("after the Service was deleted: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestMalformedAndUnsupported(t *testing.T) {
	s := newTestServer(t, Config{}, clusterObjects()...)
	valid, _ := query("web.default.svc.cluster.local.", dns.TypeA).Pack()
	header := func(id uint16, flags uint16, qd, an, ns, ar uint16) []byte {
		return []byte{byte(id >> 8), byte(id), byte(flags >> 8), byte(flags), byte(qd >> 8), byte(qd), byte(an >> 8), byte(an), byte(ns >> 8), byte(ns), byte(ar >> 8), byte(ar)}
	}
	longName := strings.Repeat("\x01a", 128) + "\x00" // 128 labels, 257 bytes
	tests := []struct {
		name  string
		msg   []byte
		rcode int // -1: no response
	}{
		{"shorter than a header", []byte{1, 2, 3}, -1},
		{"a response is dropped", append(header(1, 0x8000, 1, 0, 0, 0), valid[12:]...), -1},
		{"no question", header(2, 0x0100, 0, 0, 0, 0), dns.RcodeFormatError},
		{"two questions", append(append(header(3, 0x0100, 2, 0, 0, 0), valid[12:]...), valid[12:]...), dns.RcodeFormatError},
		{"truncated question", valid[:20], dns.RcodeFormatError},
		{"pointer loop in the name", append(header(4, 0, 1, 0, 0, 0), 0xC0, 12, 0, 1, 0, 1), dns.RcodeFormatError},
		{"UPDATE opcode", append(header(5, 5<<11, 1, 0, 0, 0), valid[12:]...), dns.RcodeNotImplemented},
		{"NOTIFY opcode", append(header(6, 4<<11, 1, 0, 0, 0), valid[12:]...), dns.RcodeNotImplemented},
		{"name over 255 bytes", append(append(header(7, 0, 1, 0, 0, 0), longName...), 0, 1, 0, 1), dns.RcodeRefused},
		{"CHAOS class", append(append(header(8, 0, 1, 0, 0, 0), "\x07version\x04bind\x00"...), 0, 16, 0, 3), dns.RcodeRefused},
		{"AXFR", append(append(header(9, 0, 1, 0, 0, 0), "\x07cluster\x05local\x00"...), 0, 252, 0, 1), dns.RcodeRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, udp := range []bool{true, false} {
				resp, err := s.serveWire(tc.msg, nil, udp, true)
				if tc.rcode < 0 {
					if err == nil {
						t.Errorf("got a response %x, want none", resp)
					}
					continue
				}
				if err != nil {
					t.Fatalf("no response: %v", err)
				}
				r := new(dns.Msg)
				if err := r.Unpack(resp); err != nil {
					t.Fatalf("response does not parse: %v", err)
				}
				if r.Id != uint16(tc.msg[0])<<8|uint16(tc.msg[1]) || !r.Response || r.Rcode != tc.rcode {
					t.Errorf("id %d response %v rcode %s, want the query's id and %s", r.Id, r.Response, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
			}
		})
	}
}

// fakeUpstream is a resolver on loopback that counts the queries it gets.
type fakeUpstream struct {
	addr    string
	queries atomic.Int32
}

func startUpstream(t *testing.T, answer func(w dns.ResponseWriter, r *dns.Msg)) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		f.queries.Add(1)
		answer(w, r)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
	return f
}

func TestForwarding(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		q := r.Question[0]
		_, isTCP := w.RemoteAddr().(*net.TCPAddr)
		switch {
		case q.Name == "example.org." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, mustRR(t, "example.org. 300 IN A 192.0.2.1"))
		case q.Name == "big.example.org." && !isTCP:
			m.Truncated = true // answer in full only over TCP
		case q.Name == "big.example.org.":
			for i := range 40 {
				m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("big.example.org. 60 IN A 192.0.2.%d", i+1)))
			}
		default:
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, mustRR(t, "example.org. 3600 IN SOA ns.example.org. h.example.org. 1 7200 1800 86400 30"))
		}
		_ = w.WriteMsg(m)
	})
	s := newTestServer(t, Config{Upstreams: []string{up.addr}}, clusterObjects()...)
	clock := time.Now()
	s.fwd.cache.now = func() time.Time { return clock }

	r := s.Handle(query("Example.ORG.", dns.TypeA))
	if r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].String() != mustRR(t, "Example.ORG. 300 IN A 192.0.2.1").String() {
		t.Fatalf("forwarded answer = %v, want the upstream's A with the question's case", r)
	}
	if r.Authoritative {
		t.Error("forwarded answer must not be authoritative")
	}
	clock = clock.Add(100 * time.Second)
	r = s.Handle(query("example.org.", dns.TypeA))
	if got := up.queries.Load(); got != 1 {
		t.Errorf("upstream got %d queries, want 1 (second answer from the cache)", got)
	}
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 200 {
		t.Errorf("cached answer = %v, want TTL 300-100=200", r.Answer)
	}
	clock = clock.Add(201 * time.Second)
	s.Handle(query("example.org.", dns.TypeA))
	if got := up.queries.Load(); got != 2 {
		t.Errorf("after the TTL expired upstream got %d queries, want 2", got)
	}

	r = s.Handle(query("nope.example.org.", dns.TypeA))
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("NXDOMAIN from upstream = %v", r)
	}
	before := up.queries.Load()
	s.Handle(query("nope.example.org.", dns.TypeA))
	if up.queries.Load() != before {
		t.Error("negative answer was not cached")
	}

	r = s.Handle(query("big.example.org.", dns.TypeA))
	if len(r.Answer) != 40 || r.Truncated {
		t.Errorf("TC from upstream: got %d answers TC=%v, want the full 40 via the TCP retry", len(r.Answer), r.Truncated)
	}

	r = s.Handle(query("ext.default.svc.cluster.local.", dns.TypeA))
	want := []string{mustRR(t, "ext.default.svc.cluster.local. 5 IN CNAME example.org.").String(), mustRR(t, "example.org. 300 IN A 192.0.2.1").String()}
	if got := strs(r.Answer); len(got) != 2 || got[0] != want[0] || !strings.HasPrefix(got[1], "example.org.\t") || !strings.HasSuffix(got[1], "192.0.2.1") {
		t.Errorf("ExternalName through upstream = %q, want %q", got, want)
	}
}

func TestForwardingNeverBlocksTheReader(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Answer = append(m.Answer, mustRR(t, r.Question[0].Name+" 60 IN A 192.0.2.7"))
		_ = w.WriteMsg(m)
	})
	s := newTestServer(t, Config{Upstreams: []string{up.addr}}, clusterObjects()...)
	b, _ := query("example.net.", dns.TypeA).Pack()
	if _, err := s.serveWire(b, nil, true, false); err != errWouldBlock {
		t.Fatalf("uncached external name on a reader: err %v, want errWouldBlock", err)
	}
	if up.queries.Load() != 0 {
		t.Fatal("the non-blocking path sent a query upstream")
	}
	if _, err := s.serveWire(b, nil, true, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.serveWire(b, nil, true, false); err != nil {
		t.Errorf("cached external name on a reader: %v, want an answer", err)
	}
	b, _ = query("web.default.svc.cluster.local.", dns.TypeA).Pack()
	if _, err := s.serveWire(b, nil, true, false); err != nil {
		t.Errorf("cluster name on a reader: %v", err)
	}
}

func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}
