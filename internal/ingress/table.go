package ingress

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

const (
	// defaultClassAnnotation marks an IngressClass as the cluster default.
	defaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
	// legacyClassAnnotation is the pre-v1 way to pick a class; still honored.
	legacyClassAnnotation = "kubernetes.io/ingress.class"
	// sslRedirectAnnotation forces ("true") or disables ("false") the
	// HTTP->HTTPS redirect of an Ingress's rules.
	sslRedirectAnnotation = "knet.dev/ssl-redirect"
	serviceNameLabel      = "kubernetes.io/service-name"
)

// table is the immutable routing state the proxy reads on every request. A
// new one is built on every change and swapped in atomically.
type table struct {
	exactHosts    map[string]*hostRules
	wildcardHosts map[string]*hostRules // "*.foo.com" is stored under "foo.com"
	anyHost       *hostRules            // rules without host
	// defaultBackend receives requests that match no rule (nil: 404).
	defaultBackend *backend
	certs          certTable
}

// snapshot is the part of the informer caches a table is built from.
type snapshot struct {
	ingresses []*networkingv1.Ingress
	classes   []*networkingv1.IngressClass
	services  map[string]*corev1.Service              // "namespace/name"
	slices    map[string][]*discoveryv1.EndpointSlice // "namespace/service"
	secrets   map[string]*corev1.Secret               // "namespace/name"
}

// newSnapshot indexes informer lists.
func newSnapshot(ings []*networkingv1.Ingress, classes []*networkingv1.IngressClass, svcs []*corev1.Service,
	eps []*discoveryv1.EndpointSlice, secrets []*corev1.Secret) snapshot {
	s := snapshot{
		ingresses: ings,
		classes:   classes,
		services:  make(map[string]*corev1.Service, len(svcs)),
		slices:    make(map[string][]*discoveryv1.EndpointSlice, len(eps)),
		secrets:   make(map[string]*corev1.Secret, len(secrets)),
	}
	for _, o := range svcs {
		s.services[o.Namespace+"/"+o.Name] = o
	}
	for _, o := range eps {
		if svc := o.Labels[serviceNameLabel]; svc != "" {
			k := o.Namespace + "/" + svc
			s.slices[k] = append(s.slices[k], o)
		}
	}
	for _, o := range secrets {
		s.secrets[o.Namespace+"/"+o.Name] = o
	}
	return s
}

// problem is why (part of) an Ingress is not served as written; each one
// becomes a Warning event on the Ingress.
type problem struct {
	ingress *networkingv1.Ingress
	reason  string
	message string
}

// buildResult is a built table and what the controller reports about it.
type buildResult struct {
	table    *table
	served   []*networkingv1.Ingress // in precedence order (oldest first)
	problems []problem
	// endpoints are the addresses the table sends traffic to; pools of
	// other addresses can be closed.
	endpoints map[string]bool
}

// builder holds what building a table needs besides the snapshot.
type builder struct {
	className, controllerName string
	pools                     *poolSet
	// loadCert parses a kubernetes.io/tls Secret (cached by the caller).
	loadCert func(*corev1.Secret) (*tls.Certificate, error)
	// h2Proxy returns the HTTP/2 (h2c) forwarder for a backend.
	h2Proxy func(*backend) *httputil.ReverseProxy

	snap     snapshot
	res      *buildResult
	backends map[string]*backend
}

// build computes the routing table as a pure function of the snapshot (the
// pools and certificate loader only cache).
func (b *builder) build(snap snapshot) *buildResult {
	b.snap = snap
	b.res = &buildResult{endpoints: map[string]bool{}}
	b.backends = map[string]*backend{}
	t := &table{
		exactHosts:    map[string]*hostRules{},
		wildcardHosts: map[string]*hostRules{},
		certs:         certTable{exact: map[string]*certEntry{}, wildcard: map[string]*certEntry{}},
	}
	b.res.table = t

	for _, ing := range snap.ingresses {
		if b.serves(ing) {
			b.res.served = append(b.res.served, ing)
		}
	}
	// Precedence: oldest creationTimestamp, then namespace/name.
	slices.SortFunc(b.res.served, func(x, y *networkingv1.Ingress) int {
		if c := x.CreationTimestamp.Time.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})

	tlsHosts := b.addCerts(t)
	type claim struct {
		owner *networkingv1.Ingress
	}
	claims := map[string]claim{}
	var defaultOwner *networkingv1.Ingress
	for _, ing := range b.res.served {
		key := ing.Namespace + "/" + ing.Name
		if db := ing.Spec.DefaultBackend; db != nil {
			if defaultOwner == nil {
				defaultOwner = ing
				t.defaultBackend = b.backend(ing, db)
			} else {
				b.warn(ing, "DefaultBackendConflict", fmt.Sprintf(
					"spec.defaultBackend is ignored: Ingress %s/%s is older and its defaultBackend is used; remove one of them",
					defaultOwner.Namespace, defaultOwner.Name))
			}
		}
		redirect := ing.Annotations[sslRedirectAnnotation]
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			host := strings.ToLower(strings.TrimSuffix(rule.Host, "."))
			for _, p := range rule.HTTP.Paths {
				r := &route{ingress: key, host: host, path: p.Path, kind: prefixPath}
				if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
					r.kind = exactPath
				}
				if r.path == "" {
					r.path = "/"
				}
				if !strings.HasPrefix(r.path, "/") {
					b.warn(ing, "InvalidPath", fmt.Sprintf("path %q of host %q does not start with \"/\"; the rule is not served", p.Path, rule.Host))
					continue
				}
				norm := r.path
				if r.kind == prefixPath {
					r.prefix = trimPrefixPath(r.path)
					norm = r.prefix
				}
				ck := host + "\x00" + r.kind.String() + "\x00" + norm
				if c, ok := claims[ck]; ok {
					if c.owner == ing {
						b.warn(ing, "DuplicatePath", fmt.Sprintf("host %q path %q (%s) appears twice; the first one is served", rule.Host, p.Path, r.kind))
					} else {
						b.warn(ing, "RuleConflict", fmt.Sprintf(
							"host %q path %q (%s) is already served by the older Ingress %s/%s; this rule is ignored, the other rules of this Ingress are served",
							rule.Host, p.Path, r.kind, c.owner.Namespace, c.owner.Name))
					}
					continue
				}
				claims[ck] = claim{owner: ing}
				r.backend = b.backend(ing, &p.Backend)
				r.sslRedirect = redirect == "true" || (redirect != "false" && hasTLS(tlsHosts, host))
				t.rules(host).add(r)
			}
		}
	}
	for _, h := range t.exactHosts {
		h.sort()
	}
	for _, h := range t.wildcardHosts {
		h.sort()
	}
	if t.anyHost != nil {
		t.anyHost.sort()
	}
	return b.res
}

// hasTLS reports whether a rule host is covered by a TLS section, itself
// or through a one-label wildcard.
func hasTLS(tlsHosts map[string]bool, host string) bool {
	if host == "" {
		return false
	}
	if tlsHosts[host] {
		return true
	}
	s, ok := wildcardSuffix(host)
	return ok && !strings.HasPrefix(host, "*.") && tlsHosts["*."+s]
}

// rules returns (creating) the hostRules a rule of host h belongs to.
func (t *table) rules(h string) *hostRules {
	m, key := t.exactHosts, h
	switch {
	case h == "":
		if t.anyHost == nil {
			t.anyHost = &hostRules{exact: map[string]*route{}}
		}
		return t.anyHost
	case strings.HasPrefix(h, "*."):
		m, key = t.wildcardHosts, h[2:]
	}
	hr := m[key]
	if hr == nil {
		hr = &hostRules{exact: map[string]*route{}}
		m[key] = hr
	}
	return hr
}

func (h *hostRules) add(r *route) {
	if r.kind == exactPath {
		h.exact[r.path] = r
		return
	}
	h.prefixes = append(h.prefixes, r)
}

// sort orders prefixes longest first; equal lengths cannot both match the
// same path unless equal, which the conflict rule already removed.
func (h *hostRules) sort() {
	slices.SortStableFunc(h.prefixes, func(x, y *route) int { return cmp.Compare(len(y.prefix), len(x.prefix)) })
}

// serves reports whether this controller serves an Ingress: its class is
// one whose controller is ours, or it has no class and ours is the default.
// When no IngressClass named ClassName exists (not applied yet), the name
// alone counts and the class is treated as the default.
func (b *builder) serves(ing *networkingv1.Ingress) bool {
	ours := map[string]bool{}
	isDefault, named := false, false
	for _, c := range b.snap.classes {
		if c.Name == b.className {
			named = true
		}
		if c.Spec.Controller == b.controllerName {
			ours[c.Name] = true
			if c.Annotations[defaultClassAnnotation] == "true" {
				isDefault = true
			}
		}
	}
	if !named {
		ours[b.className] = true
		isDefault = true
	}
	switch {
	case ing.Spec.IngressClassName != nil:
		return ours[*ing.Spec.IngressClassName]
	case ing.Annotations[legacyClassAnnotation] != "":
		return ours[ing.Annotations[legacyClassAnnotation]]
	default:
		return isDefault
	}
}

func (b *builder) warn(ing *networkingv1.Ingress, reason, msg string) {
	b.res.problems = append(b.res.problems, problem{ingress: ing, reason: reason, message: msg})
}

// backend resolves an Ingress backend to the ready endpoints of a Service
// port. Backends are shared by every rule naming the same Service port, so
// round-robin spans them all. Unresolvable backends answer 503.
func (b *builder) backend(ing *networkingv1.Ingress, ib *networkingv1.IngressBackend) *backend {
	if ib.Service == nil {
		b.warn(ing, "UnsupportedBackend", "resource backends are not supported by knet; use a Service backend")
		return &backend{name: "resource", unavailable: "resource backends are not supported"}
	}
	port := ib.Service.Port.Name
	if port == "" {
		port = strconv.Itoa(int(ib.Service.Port.Number))
	}
	svcKey := ing.Namespace + "/" + ib.Service.Name
	key := svcKey + ":" + port
	if be, ok := b.backends[key]; ok {
		return be
	}
	be := &backend{name: key}
	b.backends[key] = be
	svc := b.snap.services[svcKey]
	var sp *corev1.ServicePort
	if svc != nil {
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			if (ib.Service.Port.Name != "" && p.Name == ib.Service.Port.Name) ||
				(ib.Service.Port.Name == "" && p.Port == ib.Service.Port.Number) {
				sp = p
				break
			}
		}
	}
	switch {
	case svc == nil:
		be.unavailable = "Service not found"
		b.warn(ing, "ServiceNotFound", fmt.Sprintf("Service %s not found: requests to it get 503 until it is created", svcKey))
		return be
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		be.unavailable = "ExternalName Service"
		b.warn(ing, "UnsupportedBackend", fmt.Sprintf("Service %s is ExternalName, which knet ingress does not proxy to: use a Service with endpoints", svcKey))
		return be
	case sp == nil:
		be.unavailable = "Service port not found"
		b.warn(ing, "ServicePortNotFound", fmt.Sprintf("Service %s has no port %s: requests to it get 503; fix the Ingress backend port", svcKey, port))
		return be
	}
	if ap := sp.AppProtocol; ap != nil && (*ap == "kubernetes.io/h2c" || *ap == "grpc") {
		be.h2 = true
	}
	seen := map[string]bool{}
	for _, es := range b.snap.slices[svcKey] {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var target int32
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == sp.Name && p.Port != nil && (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				target = *p.Port
				break
			}
		}
		if target == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) || len(ep.Addresses) == 0 {
				continue
			}
			addr := net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(target)))
			if !seen[addr] {
				seen[addr] = true
				be.endpoints = append(be.endpoints, b.pools.get(addr))
				b.res.endpoints[addr] = true
			}
		}
	}
	slices.SortFunc(be.endpoints, func(x, y *endpointPool) int { return cmp.Compare(x.addr, y.addr) })
	if be.h2 && b.h2Proxy != nil {
		be.h2proxy = b.h2Proxy(be)
	}
	return be
}

// addCerts fills the table's certificates from the served Ingresses' TLS
// sections and returns the set of hosts with TLS.
func (b *builder) addCerts(t *table) map[string]bool {
	tlsHosts := map[string]bool{}
	for _, ing := range b.res.served {
		for _, it := range ing.Spec.TLS {
			var cert *tls.Certificate
			if it.SecretName != "" {
				key := ing.Namespace + "/" + it.SecretName
				sec := b.snap.secrets[key]
				var err error
				switch {
				case sec == nil:
					err = fmt.Errorf("Secret %s not found (only kubernetes.io/tls Secrets are read)", key)
				case sec.Type != corev1.SecretTypeTLS:
					err = fmt.Errorf("Secret %s has type %s, not kubernetes.io/tls", key, sec.Type)
				default:
					cert, err = b.loadCert(sec)
				}
				if err != nil {
					b.warn(ing, "TLSSecretInvalid", fmt.Sprintf("%v: hosts %v are served with the default certificate until it is fixed", err, it.Hosts))
					cert = nil
				}
			}
			if len(it.Hosts) == 0 {
				if cert != nil && t.certs.fallback == nil {
					t.certs.fallback = cert
				}
				continue
			}
			for _, h := range it.Hosts {
				h = strings.ToLower(strings.TrimSuffix(h, "."))
				tlsHosts[h] = true
				if cert == nil {
					continue
				}
				m, k := t.certs.exact, h
				if strings.HasPrefix(h, "*.") {
					m, k = t.certs.wildcard, h[2:]
				}
				if prev, ok := m[k]; ok {
					if prev.secret != ing.Namespace+"/"+it.SecretName {
						b.warn(ing, "TLSConflict", fmt.Sprintf("host %q already has the certificate of Secret %s from an older Ingress; %s is ignored for it",
							h, prev.secret, it.SecretName))
					}
					continue
				}
				m[k] = &certEntry{cert: cert, secret: ing.Namespace + "/" + it.SecretName}
			}
		}
	}
	return tlsHosts
}
