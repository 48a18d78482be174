package ingress

import (
	"path"
	"strings"
)

// pathKind is how a rule's path is compared with a request path.
// ImplementationSpecific is stored as prefixPath (documented in doc.go).
type pathKind uint8

const (
	exactPath pathKind = iota
	prefixPath
)

func (k pathKind) String() string {
	if k == exactPath {
		return "Exact"
	}
	return "Prefix"
}

// route is one Ingress path rule, resolved.
type route struct {
	ingress     string // namespace/name of the Ingress that owns the rule
	host        string // as written in the rule ("" for any host)
	path        string // as written in the rule
	kind        pathKind
	prefix      string // for prefix rules: path without trailing slashes ("" matches all)
	backend     *backend
	sslRedirect bool
}

// hostRules holds the rules of one host (or of the host-less rules).
type hostRules struct {
	exact    map[string]*route
	prefixes []*route // longest prefix first
}

// match returns the rule for a request path, or nil: longest match wins and
// an Exact rule, which matches the whole path, beats any Prefix rule of the
// same length.
func (h *hostRules) match(p string) *route {
	if r := h.exact[p]; r != nil {
		return r
	}
	for _, r := range h.prefixes {
		if prefixMatch(r.prefix, p) {
			return r
		}
	}
	return nil
}

// prefixMatch reports whether request path p matches a Prefix rule whose
// path, without trailing slashes, is prefix: element-wise, so "/aaa/bbb"
// matches "/aaa/bbb", "/aaa/bbb/" and "/aaa/bbb/ccc" but not "/aaa/bbbxyz".
func prefixMatch(prefix, p string) bool {
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	return len(p) == len(prefix) || p[len(prefix)] == '/'
}

// trimPrefixPath turns a Prefix rule's path into its comparison form: no
// trailing slash, so "/" becomes "" (matches every path) and "/foo/" equals
// "/foo".
func trimPrefixPath(p string) string {
	return strings.TrimRight(p, "/")
}

// cleanRequestPath resolves "." and ".." elements and repeated slashes, so
// that routing sees the path a backend would serve; a trailing slash is
// kept. Paths already clean are returned without allocating.
func cleanRequestPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] == '/' && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// requestHost returns the host of a Host header for routing: without port,
// lower case, without a trailing dot. It allocates only when it must change
// the case.
func requestHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// wildcardSuffix returns what a one-label wildcard must match for host h:
// "bar.foo.com" -> "foo.com". A host with a single label has none.
func wildcardSuffix(h string) (string, bool) {
	i := strings.IndexByte(h, '.')
	if i <= 0 || i == len(h)-1 {
		return "", false
	}
	return h[i+1:], true
}

// lookup picks the rule for a request: the exact host's rules, else the
// one-label wildcard's, else the host-less rules. It returns nil when the
// request matches no rule (the caller uses the default backend).
func (t *table) lookup(host, p string) *route {
	if h := t.exactHosts[host]; h != nil {
		return h.match(p)
	}
	if s, ok := wildcardSuffix(host); ok {
		if h := t.wildcardHosts[s]; h != nil {
			return h.match(p)
		}
	}
	if t.anyHost != nil {
		return t.anyHost.match(p)
	}
	return nil
}
