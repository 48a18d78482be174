package ingress

import (
	"fmt"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// TestPathMatchingDocsTable is the table of
// https://kubernetes.io/docs/concepts/services-networking/ingress/#examples,
// row by row: the rule paths of one Ingress, a request path, and which rule
// (path and type) must serve it, "" for none (default backend).
func TestPathMatchingDocsTable(t *testing.T) {
	type rp struct {
		path string
		typ  networkingv1.PathType
	}
	P, E := networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	cases := []struct {
		rules    []rp
		requests []string
		want     string // "Prefix /aaa" or "" for no match
	}{
		{[]rp{{"/", P}}, []string{"/", "/foo", "/foo/bar/", "/aaa/bbb/ccc"}, "Prefix /"},
		{[]rp{{"/foo", E}}, []string{"/foo"}, "Exact /foo"},
		{[]rp{{"/foo", E}}, []string{"/bar"}, ""},
		{[]rp{{"/foo", E}}, []string{"/foo/"}, ""},
		{[]rp{{"/foo/", E}}, []string{"/foo"}, ""},
		{[]rp{{"/foo", P}}, []string{"/foo", "/foo/"}, "Prefix /foo"},
		{[]rp{{"/foo/", P}}, []string{"/foo", "/foo/"}, "Prefix /foo/"},
		{[]rp{{"/aaa/bb", P}}, []string{"/aaa/bbb"}, ""},
		{[]rp{{"/aaa/bbb", P}}, []string{"/aaa/bbb"}, "Prefix /aaa/bbb"},
		{[]rp{{"/aaa/bbb/", P}}, []string{"/aaa/bbb"}, "Prefix /aaa/bbb/"},
		{[]rp{{"/aaa/bbb", P}}, []string{"/aaa/bbb/"}, "Prefix /aaa/bbb"},
		{[]rp{{"/aaa/bbb", P}}, []string{"/aaa/bbb/ccc"}, "Prefix /aaa/bbb"},
		{[]rp{{"/aaa/bbb", P}}, []string{"/aaa/bbbxyz"}, ""},
		{[]rp{{"/", P}, {"/aaa", P}}, []string{"/aaa/ccc"}, "Prefix /aaa"},
		{[]rp{{"/", P}, {"/aaa", P}, {"/aaa/bbb", P}}, []string{"/aaa/bbb"}, "Prefix /aaa/bbb"},
		{[]rp{{"/", P}, {"/aaa", P}, {"/aaa/bbb", P}}, []string{"/ccc"}, "Prefix /"},
		{[]rp{{"/aaa", P}}, []string{"/ccc"}, ""},
		{[]rp{{"/foo", P}, {"/foo", E}}, []string{"/foo"}, "Exact /foo"},
		// Beyond the docs: case sensitivity, ImplementationSpecific = Prefix,
		// longest match across types, and order independence.
		{[]rp{{"/foo", E}}, []string{"/FOO"}, ""},
		{[]rp{{"/Foo", P}}, []string{"/foo"}, ""},
		{[]rp{{"/aaa", networkingv1.PathTypeImplementationSpecific}}, []string{"/aaa/x"}, "Prefix /aaa"},
		{[]rp{{"/aaa", networkingv1.PathTypeImplementationSpecific}}, []string{"/aaax"}, ""},
		{[]rp{{"/aaa/bbb", P}, {"/aaa", E}}, []string{"/aaa/bbb/c"}, "Prefix /aaa/bbb"},
		{[]rp{{"/aaa", E}, {"/aaa/bbb", P}}, []string{"/aaa"}, "Exact /aaa"},
		{[]rp{{"/aaa/bbb", P}, {"/aaa", P}}, []string{"/aaa/bbb/c"}, "Prefix /aaa/bbb"},
		{[]rp{{"/foo/", E}, {"/foo", P}}, []string{"/foo/"}, "Exact /foo/"},
		// Routing sees the cleaned path.
		{[]rp{{"/admin", P}, {"/public", P}}, []string{"/public/../admin/x", "//admin//x"}, "Prefix /admin"},
	}
	for _, tc := range cases {
		var paths []networkingv1.HTTPIngressPath
		for i, r := range tc.rules {
			paths = append(paths, ingPath(r.path, r.typ, fmt.Sprintf("svc%d", i), 80))
		}
		res := build(t, newIngress("default", "ing", 0, httpRule("", paths...)))
		for _, p := range res.problems {
			if p.reason != "ServiceNotFound" { // no Services here: only routing is under test
				t.Fatalf("rules %v: unexpected problem %s: %s", tc.rules, p.reason, p.message)
			}
		}
		for _, req := range tc.requests {
			got := ""
			if r := res.table.lookup("any.example.com", cleanRequestPath(req)); r != nil {
				got = r.kind.String() + " " + r.path
			}
			if got != tc.want {
				t.Errorf("rules %v, request %q: served by %q, want %q", tc.rules, req, got, tc.want)
			}
		}
	}
}

// TestHostMatching covers the host table of the Ingress docs and the
// precedence between exact, wildcard and host-less rules.
func TestHostMatching(t *testing.T) {
	P := networkingv1.PathTypePrefix
	res := build(t, newIngress("default", "ing", 0,
		httpRule("foo.bar.com", ingPath("/", P, "exact", 80)),
		httpRule("*.foo.com", ingPath("/", P, "wildcard", 80)),
		httpRule("*.bar.com", ingPath("/only", P, "wildcard-bar", 80)),
		httpRule("", ingPath("/", P, "any", 80)),
	))
	cases := []struct{ hostHeader, path, want string }{
		{"bar.foo.com", "/", "wildcard"},   // matches based on shared suffix
		{"baz.bar.foo.com", "/", "any"},    // wildcard covers a single label
		{"foo.com", "/", "any"},            // wildcard needs one label
		{"foo.bar.com", "/x", "exact"},     // exact beats wildcard *.bar.com
		{"FOO.Bar.com:8080", "/", "exact"}, // case-insensitive, port ignored
		{"foo.bar.com.", "/", "exact"},     // trailing dot
		{"x.bar.com", "/only/y", "wildcard-bar"},
		{"x.bar.com", "/other", ""}, // host matched: no fall-through to host-less rules
		{"10.0.0.1:80", "/", "any"},
		{"[::1]:80", "/", "any"},
	}
	for _, tc := range cases {
		got := ""
		if r := res.table.lookup(requestHost(tc.hostHeader), tc.path); r != nil {
			got = strings.Split(r.backend.name, "/")[1]
			got = strings.Split(got, ":")[0]
		}
		if got != tc.want {
			t.Errorf("Host %q path %q: served by %q, want %q", tc.hostHeader, tc.path, got, tc.want)
		}
	}
}

func TestCleanRequestPath(t *testing.T) {
	for in, want := range map[string]string{
		"/": "/", "": "/", "/a/b": "/a/b", "/a/b/": "/a/b/", "/a/./b": "/a/b", "/a/../b/": "/b/",
		"//a//b": "/a/b", "/..": "/", "/a/.hidden": "/a/.hidden", "/a/..": "/",
	} {
		if got := cleanRequestPath(in); got != want {
			t.Errorf("cleanRequestPath(%q) = %q, want %q", in, got, want)
		}
	}
}
