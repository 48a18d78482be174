package dns

import (
	"reflect"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// TestClusterAnswers checks every record kind of the Kubernetes DNS
// specification, and CoreDNS's choices where it leaves one, against
// expected answers written as zone-file lines.
func TestClusterAnswers(t *testing.T) {
	s := newTestServer(t, Config{}, clusterObjects()...)
	soa := "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {serial} 7200 1800 86400 5"
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
		extra  []string
	}{
		{name: "ClusterIP A", qname: "web.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "AAAA of an IPv4-only Service is NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			ns: []string{soa}},
		{name: "answer keeps the question's case", qname: "WeB.DeFault.SVC.Cluster.Local.", qtype: dns.TypeA,
			answer: []string{"WeB.DeFault.SVC.Cluster.Local. 5 IN A 10.96.0.20"}},
		{name: "missing Service is NXDOMAIN", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "missing Service in another type is NXDOMAIN too", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeMX,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "existing Service, other type, is NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeMX,
			ns: []string{soa}},
		{name: "headless A lists ready endpoints", qname: "db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"db.default.svc.cluster.local. 5 IN A 10.244.2.7", "db.default.svc.cluster.local. 5 IN A 10.244.2.8"}},
		{name: "headless endpoint by hostname", qname: "db-0.db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"db-0.db.default.svc.cluster.local. 5 IN A 10.244.2.7"}},
		{name: "headless endpoint without hostname is named by its dashed IP", qname: "10-244-2-8.db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"10-244-2-8.db.default.svc.cluster.local. 5 IN A 10.244.2.8"}},
		{name: "not-ready endpoint has no name", qname: "10-244-2-9.db.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "headless Service without endpoints is NXDOMAIN (CoreDNS)", qname: "empty.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "endpoint name of a ClusterIP Service (CoreDNS)", qname: "10-244-1-5.web.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"10-244-1-5.web.default.svc.cluster.local. 5 IN A 10.244.1.5"}},
		{name: "ClusterIP SRV for a named port", qname: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "port names without underscores work as in CoreDNS", qname: "https.tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"https.tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 443 web.default.svc.cluster.local."},
			extra:  []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "SRV of the Service name lists every port", qname: "web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{
				"web.default.svc.cluster.local. 5 IN SRV 0 50 80 web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN SRV 0 50 443 web.default.svc.cluster.local.",
			},
			extra: []string{"web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "headless SRV targets each endpoint", qname: "_pg._tcp.db.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
				"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 10-244-2-8.db.default.svc.cluster.local.",
			},
			extra: []string{
				"db-0.db.default.svc.cluster.local. 5 IN A 10.244.2.7",
				"10-244-2-8.db.default.svc.cluster.local. 5 IN A 10.244.2.8",
			}},
		{name: "unknown port name is NXDOMAIN", qname: "_nope._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "wrong protocol is NXDOMAIN", qname: "_http._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "A on a port name gives the ClusterIP (CoreDNS)", qname: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN A 10.96.0.20"}},
		{name: "dual-stack SRV: one record, both addresses", qname: "_dns._udp.dual.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_dns._udp.dual.default.svc.cluster.local. 5 IN SRV 0 50 53 dual.default.svc.cluster.local."},
			extra: []string{
				"dual.default.svc.cluster.local. 5 IN A 10.96.0.30",
				"dual.default.svc.cluster.local. 5 IN AAAA fd00::30",
			}},
		{name: "IPv6 Service AAAA", qname: "v6.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"v6.default.svc.cluster.local. 5 IN AAAA fd00::10"}},
		{name: "IPv6 Service A is NODATA", qname: "v6.default.svc.cluster.local.", qtype: dns.TypeA,
			ns: []string{soa}},
		{name: "Service without ports has an A", qname: "noports.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"noports.default.svc.cluster.local. 5 IN A 10.96.0.40"}},
		{name: "Service without ports has no SRV", qname: "noports.default.svc.cluster.local.", qtype: dns.TypeSRV,
			ns: []string{soa}},
		{name: "ExternalName CNAME", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeCNAME,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME example.org."}},
		{name: "ExternalName A without upstreams is the CNAME alone", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"ext.default.svc.cluster.local. 5 IN CNAME example.org."}},
		{name: "ExternalName SRV is NODATA", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeSRV,
			ns: []string{soa}},
		{name: "ExternalName with port labels is NXDOMAIN (CoreDNS)", qname: "_x._tcp.ext.default.svc.cluster.local.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ExternalName with port labels, A, is NXDOMAIN", qname: "_http._tcp.ext.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ExternalName with only a protocol label is NXDOMAIN", qname: "_._tcp.ext.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ExternalName with an endpoint label is NXDOMAIN", qname: "x.ext.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ExternalName pointing at itself: A drops the loop (NODATA)", qname: "self.default.svc.cluster.local.", qtype: dns.TypeA,
			ns: []string{soa}},
		{name: "ExternalName pointing at itself: CNAME is answered (CoreDNS has no loop check there)", qname: "self.default.svc.cluster.local.", qtype: dns.TypeCNAME,
			answer: []string{"self.default.svc.cluster.local. 5 IN CNAME self.default.svc.cluster.local."}},
		{name: "ExternalName pointing below itself: A drops the loop", qname: "below.default.svc.cluster.local.", qtype: dns.TypeA,
			ns: []string{soa}},
		{name: "ExternalName TXT is NODATA", qname: "ext.default.svc.cluster.local.", qtype: dns.TypeTXT,
			ns: []string{soa}},
		{name: "ExternalName into the cluster is followed", qname: "alias.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{
				"alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
				"web.default.svc.cluster.local. 5 IN A 10.96.0.20",
			}},
		{name: "PTR of a ClusterIP", qname: "20.0.96.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."}},
		{name: "PTR of a headless endpoint with hostname", qname: "7.2.244.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"7.2.244.10.in-addr.arpa. 5 IN PTR db-0.db.default.svc.cluster.local."}},
		{name: "PTR of an endpoint without hostname", qname: "8.2.244.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"8.2.244.10.in-addr.arpa. 5 IN PTR 10-244-2-8.db.default.svc.cluster.local."}},
		{name: "PTR of an IPv6 ClusterIP", qname: "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR v6.default.svc.cluster.local."}},
		{name: "PTR of an unknown IP is not ours: REFUSED without upstreams", qname: "1.1.1.1.in-addr.arpa.", qtype: dns.TypePTR,
			rcode: dns.RcodeRefused},
		{name: "schema version", qname: "dns-version.cluster.local.", qtype: dns.TypeTXT,
			answer: []string{`dns-version.cluster.local. 28800 IN TXT "1.1.0"`}},
		{name: "pod A (insecure mode)", qname: "10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeA,
			answer: []string{"10-244-0-1.default.pod.cluster.local. 5 IN A 10.244.0.1"}},
		{name: "pod AAAA of an IPv4 pod is NODATA", qname: "10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeAAAA,
			ns: []string{soa}},
		{name: "IPv6 pod", qname: "fd00--1.default.pod.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"fd00--1.default.pod.cluster.local. 5 IN AAAA fd00::1"}},
		{name: "pod name that is no IP is NXDOMAIN", qname: "not-an-ip.default.pod.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "namespace is NODATA", qname: "default.svc.cluster.local.", qtype: dns.TypeA, ns: []string{soa}},
		{name: "svc is NODATA", qname: "svc.cluster.local.", qtype: dns.TypeA, ns: []string{soa}},
		{name: "apex A is NODATA", qname: "cluster.local.", qtype: dns.TypeA, ns: []string{soa}},
		{name: "apex SOA", qname: "cluster.local.", qtype: dns.TypeSOA, answer: []string{soa}},
		{name: "apex NS names the kube-dns Service (CoreDNS in its pod)", qname: "cluster.local.", qtype: dns.TypeNS,
			answer: []string{"cluster.local. 5 IN NS kube-dns.kube-system.svc.cluster.local."},
			extra:  []string{"kube-dns.kube-system.svc.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "name server address", qname: "ns.dns.cluster.local.", qtype: dns.TypeA,
			answer: []string{"ns.dns.cluster.local. 5 IN A 10.96.0.10"}},
		{name: "neither svc nor pod is NXDOMAIN", qname: "foo.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "too many labels is NXDOMAIN", qname: "a.b.c.web.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "wildcards are not expanded (CoreDNS >= 1.9)", qname: "*.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},

		// Pods: SRV and extra labels as CoreDNS's findPods.
		{name: "pod SRV names the pod with port 0", qname: "10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"10-244-0-1.default.pod.cluster.local. 5 IN SRV 0 100 0 10-244-0-1.default.pod.cluster.local."},
			extra:  []string{"10-244-0-1.default.pod.cluster.local. 5 IN A 10.244.0.1"}},
		{name: "IPv6 pod SRV", qname: "fd00--1.default.pod.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"fd00--1.default.pod.cluster.local. 5 IN SRV 0 100 0 fd00--1.default.pod.cluster.local."},
			extra:  []string{"fd00--1.default.pod.cluster.local. 5 IN AAAA fd00::1"}},
		{name: "pod name with an extra label answers the pod", qname: "x.10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeA,
			answer: []string{"x.10-244-0-1.default.pod.cluster.local. 5 IN A 10.244.0.1"}},
		{name: "pod name with an extra label: SRV targets the pod name", qname: "x.10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"x.10-244-0-1.default.pod.cluster.local. 5 IN SRV 0 100 0 10-244-0-1.default.pod.cluster.local."},
			extra:  []string{"10-244-0-1.default.pod.cluster.local. 5 IN A 10.244.0.1"}},
		{name: "pod name with two extra labels answers the pod", qname: "_a._b.10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeA,
			answer: []string{"_a._b.10-244-0-1.default.pod.cluster.local. 5 IN A 10.244.0.1"}},
		{name: "pod name with three extra labels is NXDOMAIN", qname: "a.b.c.10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "pod TXT is NODATA", qname: "10-244-0-1.default.pod.cluster.local.", qtype: dns.TypeTXT,
			ns: []string{soa}},

		// Namespaces that do not exist.
		{name: "Service name in a missing namespace is NXDOMAIN", qname: "web.nope-ns.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "missing namespace is NXDOMAIN", qname: "nope-ns.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "namespace without Services is NODATA", qname: "empty-ns.svc.cluster.local.", qtype: dns.TypeA,
			ns: []string{soa}},
		{name: "pod in a missing namespace is NXDOMAIN", qname: "10-244-0-1.nope-ns.pod.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "missing namespace's pod name is NXDOMAIN", qname: "nope-ns.pod.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "existing namespace's pod name is NODATA", qname: "default.pod.cluster.local.", qtype: dns.TypeA,
			ns: []string{soa}},

		// NODATA versus NXDOMAIN around the names the specification defines.
		{name: "apex TXT is NXDOMAIN (CoreDNS)", qname: "cluster.local.", qtype: dns.TypeTXT,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "Service TXT is NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeTXT,
			ns: []string{soa}},
		{name: "namespace TXT is NXDOMAIN (no records under it)", qname: "default.svc.cluster.local.", qtype: dns.TypeTXT,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "missing Service TXT is NXDOMAIN", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeTXT,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "dns-version A is NXDOMAIN", qname: "dns-version.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "dns A is NXDOMAIN", qname: "dns.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ns.dns TXT is NXDOMAIN", qname: "ns.dns.cluster.local.", qtype: dns.TypeTXT,
			rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "ns.dns MX is NODATA", qname: "ns.dns.cluster.local.", qtype: dns.TypeMX,
			ns: []string{soa}},
		{name: "SOA below the apex is NODATA, even for a missing name", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeSOA,
			ns: []string{soa}},
		{name: "headless endpoint at an IPv6 address ending in :: is named with a trailing 0", qname: "fd00-1--0.v6hl.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"fd00-1--0.v6hl.default.svc.cluster.local. 5 IN AAAA fd00:1::"}},

		// The zone keeps the question's case in SRV targets and the SOA.
		{name: "SRV target ends in the zone as asked", qname: "_HTTP._TCP.WEB.DEFAULT.SVC.CLUSTER.LOCAL.", qtype: dns.TypeSRV,
			answer: []string{"_HTTP._TCP.WEB.DEFAULT.SVC.CLUSTER.LOCAL. 5 IN SRV 0 100 80 web.default.svc.CLUSTER.LOCAL."},
			extra:  []string{"web.default.svc.CLUSTER.LOCAL. 5 IN A 10.96.0.20"}},
		{name: "headless SRV targets end in the zone as asked", qname: "_pg._tcp.db.default.svc.Cluster.Local.", qtype: dns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.default.svc.Cluster.Local. 5 IN SRV 0 50 5432 db-0.db.default.svc.Cluster.Local.",
				"_pg._tcp.db.default.svc.Cluster.Local. 5 IN SRV 0 50 5432 10-244-2-8.db.default.svc.Cluster.Local.",
			},
			extra: []string{
				"db-0.db.default.svc.Cluster.Local. 5 IN A 10.244.2.7",
				"10-244-2-8.db.default.svc.Cluster.Local. 5 IN A 10.244.2.8",
			}},
		{name: "negative answer's SOA is the zone as asked", qname: "nope.default.svc.Cluster.LOCAL.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: []string{"Cluster.LOCAL. 5 IN SOA ns.dns.Cluster.LOCAL. hostmaster.Cluster.LOCAL. {serial} 7200 1800 86400 5"}},

		// Reverse zones, served as CoreDNS with `fallthrough in-addr.arpa ip6.arpa`.
		{name: "SOA below a reverse apex is NODATA with the reverse zone's SOA", qname: "10.in-addr.arpa.", qtype: dns.TypeSOA,
			ns: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {serial} 7200 1800 86400 5"}},
		{name: "SOA of a Service IP's reverse name is NODATA", qname: "20.0.96.10.in-addr.arpa.", qtype: dns.TypeSOA,
			ns: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {serial} 7200 1800 86400 5"}},
		{name: "reverse apex SOA", qname: "in-addr.arpa.", qtype: dns.TypeSOA,
			answer: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {serial} 7200 1800 86400 5"}},
		{name: "ip6.arpa SOA keeps the case as asked", qname: "IP6.ARPA.", qtype: dns.TypeSOA,
			answer: []string{"IP6.ARPA. 5 IN SOA ns.dns.IP6.ARPA. hostmaster.IP6.ARPA. {serial} 7200 1800 86400 5"}},
		{name: "reverse apex A is NODATA", qname: "in-addr.arpa.", qtype: dns.TypeA,
			ns: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {serial} 7200 1800 86400 5"}},
		{name: "reverse apex PTR is NODATA", qname: "in-addr.arpa.", qtype: dns.TypePTR,
			ns: []string{"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {serial} 7200 1800 86400 5"}},
		{name: "reverse apex NS names the kube-dns Service", qname: "in-addr.arpa.", qtype: dns.TypeNS,
			answer: []string{"in-addr.arpa. 5 IN NS kube-dns.kube-system.svc.in-addr.arpa."},
			extra:  []string{"kube-dns.kube-system.svc.in-addr.arpa. 5 IN A 10.96.0.10"}},
		{name: "reverse apex TXT falls through: REFUSED without upstreams", qname: "in-addr.arpa.", qtype: dns.TypeTXT,
			rcode: dns.RcodeRefused},
		{name: "A below a reverse apex falls through", qname: "10.in-addr.arpa.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused},
		{name: "TXT of a Service IP's reverse name falls through", qname: "20.0.96.10.in-addr.arpa.", qtype: dns.TypeTXT,
			rcode: dns.RcodeRefused},
		{name: "outside the cluster domain without upstreams is REFUSED", qname: "example.com.", qtype: dns.TypeA,
			rcode: dns.RcodeRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := query(tc.qname, tc.qtype)
			m := s.Handle(req)
			if m == nil {
				t.Fatal("no response")
			}
			if m.Id != req.Id || !m.Response || len(m.Question) != 1 || m.Question[0].Name != tc.qname {
				t.Errorf("reply header/question do not match the query: %v", m)
			}
			if m.Rcode != tc.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			for _, sec := range []struct {
				name      string
				got, want []string
			}{
				{"answer", strs(m.Answer), rrs(t, s, tc.answer...)},
				{"authority", strs(m.Ns), rrs(t, s, tc.ns...)},
				{"additional", strs(m.Extra), rrs(t, s, tc.extra...)},
			} {
				if !slices.Equal(sec.got, sec.want) {
					t.Errorf("%s section:\n got  %q\n want %q", sec.name, sec.got, sec.want)
				}
			}
			if tc.rcode != dns.RcodeRefused && !m.Authoritative {
				t.Errorf("cluster answer is not authoritative")
			}
		})
	}
}

// TestRebuildWithoutChangeChangesNothing: rebuilding from the same objects
// (in any order) gives the same DNS data, so a resync is invisible to
// clients.
func TestRebuildWithoutChangeChangesNothing(t *testing.T) {
	objs := clusterObjects()
	a := newTestServer(t, Config{}, objs...).snap.Load()
	slices.Reverse(objs)
	b := newTestServer(t, Config{}, objs...).snap.Load()
	a.gen, a.serial, b.gen, b.serial = 0, 0, 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Errorf("snapshots differ:\n%+v\n%+v", a, b)
	}
}
