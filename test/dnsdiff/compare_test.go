package dnsdiff

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func msg(t *testing.T, rcode int, answer, ns []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("web.ns.svc.cluster.local.", dns.TypeA)
	m.Response, m.Authoritative, m.Rcode = true, true, rcode
	parse := func(lines []string) []dns.RR {
		var rrs []dns.RR
		for _, l := range lines {
			rr, err := dns.NewRR(l)
			if err != nil {
				t.Fatalf("parse %q: %v", l, err)
			}
			rrs = append(rrs, rr)
		}
		return rrs
	}
	m.Answer, m.Ns = parse(answer), parse(ns)
	return m
}

const soa = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. %s 7200 1800 86400 5"

func TestDiff(t *testing.T) {
	soaAt := func(serial string) string { return strings.Replace(soa, "%s", serial, 1) }
	tests := []struct {
		name      string
		knet, ref *dns.Msg
		opt       Options
		want      []string // substrings, one per expected difference
	}{
		{
			name: "same records in another order agree",
			knet: msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1", "web.ns.svc.cluster.local. 5 IN A 10.0.0.2"}, nil),
			ref:  msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.2", "web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
		},
		{
			name: "SOA serial is ignored",
			knet: msg(t, dns.RcodeNameError, nil, []string{soaAt("1700000000")}),
			ref:  msg(t, dns.RcodeNameError, nil, []string{soaAt("1800000000")}),
		},
		{
			name: "rcode and authority differ",
			knet: msg(t, dns.RcodeSuccess, nil, []string{soaAt("1")}),
			ref:  msg(t, dns.RcodeNameError, nil, nil),
			want: []string{"rcode: knet NOERROR, reference NXDOMAIN", "authority: knet only [cluster.local. 5 IN SOA"},
		},
		{
			name: "TTL differs unless ignored",
			knet: msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			ref:  msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 3 IN A 10.0.0.1"}, nil),
			want: []string{"answer: knet only [web.ns.svc.cluster.local. 5 IN A 10.0.0.1]; reference only [web.ns.svc.cluster.local. 3 IN A 10.0.0.1]"},
		},
		{
			name: "TTL ignored",
			knet: msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			ref:  msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 3 IN A 10.0.0.1"}, nil),
			opt:  Options{IgnoreTTL: true},
		},
		{
			name: "owner case matters",
			knet: msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			ref:  msg(t, dns.RcodeSuccess, []string{"Web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			want: []string{"answer: knet only [web.ns"},
		},
		{
			name: "a duplicate record is a difference",
			knet: msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1", "web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			ref:  msg(t, dns.RcodeSuccess, []string{"web.ns.svc.cluster.local. 5 IN A 10.0.0.1"}, nil),
			want: []string{"answer: knet only [web.ns.svc.cluster.local. 5 IN A 10.0.0.1]; reference only (none)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.knet, tt.ref, tt.opt)
			if len(got) != len(tt.want) {
				t.Fatalf("Diff = %q, want %d differences like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("difference %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestAAFlagAndEDNSDiffer(t *testing.T) {
	a := msg(t, dns.RcodeSuccess, nil, nil)
	b := msg(t, dns.RcodeSuccess, nil, nil)
	b.Authoritative = false
	b.SetEdns0(1232, false)
	got := Diff(a, b, Options{})
	want := []string{"AA flag: knet true, reference false", "EDNS flag: knet false, reference true"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Diff = %q, want %q", got, want)
	}
}

func TestQueriesNeedAllocatedClusterIPs(t *testing.T) {
	f := NewFixture("dnsdiff")
	if _, err := f.Queries(zone); err == nil {
		t.Fatal("Queries before Apply succeeded; want an error about missing ClusterIPs")
	}
	for _, s := range f.Services {
		if s.Spec.Type != "ExternalName" && s.Spec.ClusterIP != "None" {
			s.Spec.ClusterIP = "10.96.1.1"
		}
	}
	qs, err := f.Queries(zone)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, q := range qs {
		if _, ok := dns.IsDomainName(q.Name); !ok || !dns.IsFqdn(q.Name) {
			t.Errorf("query %s is not a fully qualified domain name", q)
		}
		seen[dns.TypeToString[q.Type]] = true
	}
	for _, typ := range []string{"A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS"} {
		if !seen[typ] {
			t.Errorf("no %s query in the list", typ)
		}
	}
}
