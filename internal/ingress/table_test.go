package ingress

import (
	"crypto/x509"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func endpointAddrs(be *backend) []string {
	var out []string
	for _, ep := range be.endpoints {
		out = append(out, ep.addr)
	}
	return out
}

func TestBackendResolvesReadyEndpointsThroughPortName(t *testing.T) {
	P := networkingv1.PathTypePrefix
	svc := newService("shop", "web", 80)
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9000, Protocol: corev1.ProtocolTCP})
	named := ingPath("/admin", P, "web", 0)
	named.Backend.Service.Port = networkingv1.ServiceBackendPort{Name: "admin"}
	res := build(t,
		newIngress("shop", "web", 0, httpRule("shop.example", ingPath("/", P, "web", 80), named)),
		svc,
		newSlice("shop", "web", "http", 8080, "10.0.0.1", "!10.0.0.2", "10.0.0.3"),
		newSlice("shop", "web", "admin", 9090, "10.0.0.1"),
		newSlice("shop", "web", "metrics", 9100, "10.0.0.9"),
		newSlice("other", "web", "http", 7777, "10.9.9.9"), // same name, other namespace
	)
	if p := problemsOf(res); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	got := endpointAddrs(res.table.lookup("shop.example", "/cart").backend)
	if want := []string{"10.0.0.1:8080", "10.0.0.3:8080"}; !slices.Equal(got, want) {
		t.Errorf("port 80 endpoints = %v, want %v (ready only, targetPort from the slice port named http)", got, want)
	}
	got = endpointAddrs(res.table.lookup("shop.example", "/admin").backend)
	if want := []string{"10.0.0.1:9090"}; !slices.Equal(got, want) {
		t.Errorf("port admin endpoints = %v, want %v", got, want)
	}
}

func TestConflictOldestWinsOtherRulesKeepServing(t *testing.T) {
	P := networkingv1.PathTypePrefix
	older := newIngress("b", "first", 0, httpRule("app.example", ingPath("/api", P, "api-b", 80)))
	newer := newIngress("a", "second", 10,
		httpRule("app.example", ingPath("/api/", P, "api-a", 80), ingPath("/docs", P, "docs-a", 80)))
	res := build(t, newer, older, newService("a", "api-a", 80), newService("b", "api-b", 80), newService("a", "docs-a", 80))
	if r := res.table.lookup("app.example", "/api/x"); r == nil || r.ingress != "b/first" {
		t.Errorf("/api served by %v, want the older Ingress b/first", r)
	}
	if r := res.table.lookup("app.example", "/docs"); r == nil || r.ingress != "a/second" {
		t.Errorf("/docs served by %v, want a/second (its non-conflicting rule)", r)
	}
	if got, want := problemsOf(res), []string{"a/second RuleConflict"}; !slices.Equal(got, want) {
		t.Errorf("problems = %v, want %v", got, want)
	}

	// Same creationTimestamp: namespace/name decides.
	tie := newIngress("a", "second", 0, httpRule("app.example", ingPath("/api", P, "api-a", 80)))
	res = build(t, older, tie, newService("a", "api-a", 80), newService("b", "api-b", 80))
	if r := res.table.lookup("app.example", "/api"); r == nil || r.ingress != "a/second" {
		t.Errorf("tie: /api served by %v, want a/second (a/ sorts first)", r)
	}
	if got, want := problemsOf(res), []string{"b/first RuleConflict"}; !slices.Equal(got, want) {
		t.Errorf("tie: problems = %v, want %v", got, want)
	}

	// Exact and Prefix on the same path do not conflict.
	ex := newIngress("a", "exact", 20, httpRule("app.example", ingPath("/api", networkingv1.PathTypeExact, "api-a", 80)))
	res = build(t, older, ex, newService("a", "api-a", 80), newService("b", "api-b", 80))
	if len(res.problems) != 0 {
		t.Errorf("Exact and Prefix /api: problems %v, want none", problemsOf(res))
	}
}

func TestDefaultBackendOfOldestIngress(t *testing.T) {
	old := newIngress("a", "old", 0)
	old.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: svcBackend("fallback", 80).Service}
	young := newIngress("a", "young", 5)
	young.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: svcBackend("other", 80).Service}
	res := build(t, young, old, newService("a", "fallback", 80), newService("a", "other", 80))
	if db := res.table.defaultBackend; db == nil || db.name != "a/fallback:80" {
		t.Errorf("default backend = %v, want a/fallback:80", db)
	}
	if got, want := problemsOf(res), []string{"a/young DefaultBackendConflict"}; !slices.Equal(got, want) {
		t.Errorf("problems = %v, want %v", got, want)
	}
	if build(t).table.defaultBackend != nil {
		t.Error("no Ingress: default backend should be nil (404)")
	}
}

func TestIngressClassSelection(t *testing.T) {
	strp := func(s string) *string { return &s }
	mk := func(name string, class *string, legacy string) *networkingv1.Ingress {
		ing := newIngress("ns", name, 0)
		ing.Spec.IngressClassName = class
		if legacy != "" {
			ing.Annotations = map[string]string{legacyClassAnnotation: legacy}
		}
		return ing
	}
	ings := []any{mk("knet", strp("knet"), ""), mk("nginx", strp("nginx"), ""), mk("none", nil, ""),
		mk("legacy-knet", nil, "knet"), mk("legacy-nginx", nil, "nginx")}
	other := &networkingv1.IngressClass{}
	other.Name, other.Spec.Controller = "nginx", "k8s.io/ingress-nginx"
	mine := &networkingv1.IngressClass{}
	mine.Name, mine.Spec.Controller = "mine", "knet.dev/ingress"
	for _, tc := range []struct {
		name    string
		classes []any
		want    []string
	}{
		{"knet is default", []any{knetClass(true), other}, []string{"knet", "legacy-knet", "none"}},
		{"knet not default", []any{knetClass(false), other}, []string{"knet", "legacy-knet"}},
		{"no IngressClass object yet", []any{other}, []string{"knet", "legacy-knet", "none"}},
		{"another class of ours", []any{knetClass(false), mine}, []string{"knet", "legacy-knet"}},
	} {
		res := build(t, append(slices.Clone(ings), tc.classes...)...)
		var got []string
		for _, ing := range res.served {
			got = append(got, ing.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: served %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestInvalidIngressOnlyAffectsItself(t *testing.T) {
	P := networkingv1.PathTypePrefix
	good := newIngress("a", "good", 0, httpRule("good.example", ingPath("/", P, "web", 80)))
	bad := newIngress("a", "bad", 1, httpRule("bad.example",
		ingPath("/", P, "missing", 80), ingPath("/port", P, "web", 81)))
	ext := newService("a", "ext", 80)
	ext.Spec.Type = corev1.ServiceTypeExternalName
	res := build(t, good, bad, ext, newService("a", "web", 80), newSlice("a", "web", "http", 8080, "10.0.0.1"))
	if got, want := problemsOf(res), []string{"a/bad ServiceNotFound", "a/bad ServicePortNotFound"}; !slices.Equal(got, want) {
		t.Errorf("problems = %v, want %v", got, want)
	}
	if r := res.table.lookup("good.example", "/"); r == nil || len(r.backend.endpoints) != 1 {
		t.Errorf("good Ingress not served: %v", r)
	}
	for _, p := range []string{"/", "/port"} {
		if r := res.table.lookup("bad.example", p); r == nil || r.backend.unavailable == "" {
			t.Errorf("bad.example%s: want a route with an unavailable backend (503), got %v", p, r)
		}
	}
}

func TestH2BackendFromAppProtocol(t *testing.T) {
	P := networkingv1.PathTypePrefix
	for _, ap := range []string{"kubernetes.io/h2c", "grpc"} {
		svc := newService("a", "grpc", 80)
		svc.Spec.Ports[0].AppProtocol = &ap
		res := build(t, newIngress("a", "g", 0, httpRule("", ingPath("/", P, "grpc", 80))), svc)
		if r := res.table.lookup("x", "/"); r == nil || !r.backend.h2 {
			t.Errorf("appProtocol %s: backend not h2", ap)
		}
	}
	res := build(t, newIngress("a", "g", 0, httpRule("", ingPath("/", P, "web", 80))), newService("a", "web", 80))
	if r := res.table.lookup("x", "/"); r == nil || r.backend.h2 {
		t.Error("no appProtocol: backend should be HTTP/1.1")
	}
}

func TestTLSSelectionAndRedirect(t *testing.T) {
	P := networkingv1.PathTypePrefix
	exactSec, _ := tlsSecret(t, "a", "exact", "www.example.com")
	wildSec, _ := tlsSecret(t, "a", "wild", "*.example.com")
	stolen, _ := tlsSecret(t, "b", "stolen", "www.example.com")
	ing := newIngress("a", "site", 0,
		httpRule("www.example.com", ingPath("/", P, "web", 80)),
		httpRule("api.example.com", ingPath("/", P, "web", 80)),
		httpRule("plain.example.org", ingPath("/", P, "web", 80)),
	)
	ing.Spec.TLS = []networkingv1.IngressTLS{
		{Hosts: []string{"www.example.com"}, SecretName: "exact"},
		{Hosts: []string{"*.example.com"}, SecretName: "wild"},
		{Hosts: []string{"broken.example.com"}, SecretName: "absent"},
	}
	noRedirect := newIngress("a", "no-redirect", 1, httpRule("api.example.com", ingPath("/keep-http", P, "web", 80)))
	noRedirect.Annotations = map[string]string{sslRedirectAnnotation: "false"}
	forced := newIngress("a", "forced", 2, httpRule("plain.example.org", ingPath("/secure", P, "web", 80)))
	forced.Annotations = map[string]string{sslRedirectAnnotation: "true"}
	thief := newIngress("b", "thief", 3)
	thief.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"www.example.com"}, SecretName: "stolen"}}
	res := build(t, ing, noRedirect, forced, thief, exactSec, wildSec, stolen, newService("a", "web", 80))

	leafOf := func(sni string) *x509.Certificate {
		c := res.table.certs.forSNI(sni)
		if c == nil {
			return nil
		}
		return c.Leaf
	}
	for sni, want := range map[string]string{
		"www.example.com": "www.example.com", "WWW.Example.com": "www.example.com",
		"api.example.com": "*.example.com", "a.b.example.com": "", "example.com": "",
		"broken.example.com": "*.example.com", "": "",
	} {
		got := ""
		if l := leafOf(sni); l != nil {
			got = l.DNSNames[0]
		}
		if got != want {
			t.Errorf("SNI %q: certificate for %q, want %q (\"\" = default certificate)", sni, got, want)
		}
	}
	if got, want := problemsOf(res), []string{"a/site TLSSecretInvalid", "b/thief TLSConflict"}; !slices.Equal(got, want) {
		t.Errorf("problems = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		host, path string
		redirect   bool
	}{
		{"www.example.com", "/", true},           // host with TLS: on by default
		{"api.example.com", "/x", true},          // TLS through *.example.com
		{"api.example.com", "/keep-http", false}, // annotation false
		{"plain.example.org", "/", false},        // no TLS
		{"plain.example.org", "/secure", true},   // annotation true
	} {
		r := res.table.lookup(tc.host, tc.path)
		if r == nil || r.sslRedirect != tc.redirect {
			t.Errorf("%s%s: sslRedirect = %v, want %v", tc.host, tc.path, r != nil && r.sslRedirect, tc.redirect)
		}
	}
}
