// Package ingress is knet's Ingress controller and L7 proxy: it serves the
// Ingresses of IngressClass "knet" (controller "knet.dev/ingress") and, when
// that class is the cluster default, the Ingresses with no class, by proxying
// HTTP/1.1, HTTP/2 (over TLS) and websockets straight to the ready endpoints
// of each backend Service's EndpointSlices.
//
// It owns its listeners (HTTP, HTTPS, health), its informers, an immutable
// routing table swapped atomically on every change (no reload, no generated
// configuration: request routing never interprets user strings as code or
// config text), its per-endpoint keep-alive connection pools, and the
// status.loadBalancer of the Ingresses it serves, copied from its own
// LoadBalancer Service. It only reads Ingresses, IngressClasses, Services,
// EndpointSlices and kubernetes.io/tls Secrets; it writes only Ingress status
// and Events. It never touches the kernel's routes, links or nftables.
//
// Matching semantics (Kubernetes Ingress v1, to the letter):
//
//   - Hosts are exact or one-label wildcards: "*.foo.com" matches
//     "bar.foo.com" but neither "baz.bar.foo.com" nor "foo.com". A request's
//     host is taken from the Host header (the :authority in HTTP/2), without
//     port, case-insensitively. An exact host beats a wildcard host, which
//     beats rules with no host. Once a host's rules are chosen, a path that
//     matches none of them goes to the default backend; it does not fall
//     through to wildcard or host-less rules (as in ingress-nginx, where each
//     host is one server block).
//   - pathType Exact compares the whole path, case-sensitively. Prefix
//     compares element-wise on "/", ignoring a trailing slash: "/aaa/bbb"
//     matches "/aaa/bbb/ccc" but not "/aaa/bbbxyz". ImplementationSpecific
//     is treated exactly as Prefix. The longest matching path wins; Exact
//     beats Prefix at equal length. Matching uses the request path with "."
//     and ".." elements and repeated slashes resolved, so "/public/../admin"
//     is routed as "/admin"; the backend still receives the original
//     request URI unchanged.
//   - Rules are merged across Ingresses. Two Ingresses claiming the same
//     host, path and path type conflict: the Ingress with the oldest
//     creationTimestamp (then the smaller namespace/name) wins; the other
//     gets a Warning event and its other rules keep serving. The same rule
//     holds for TLS certificates of one host and for spec.defaultBackend:
//     the oldest Ingress's defaultBackend receives requests that match no
//     rule; without one they get 404.
//   - A backend Service that does not exist (or is ExternalName, or lacks
//     the port) answers 503 and its Ingress gets a Warning event; a Service
//     without ready endpoints answers 503; an endpoint that cannot be
//     reached answers 502 after one retry; a backend that does not answer
//     in time answers 504.
//
// TLS: certificates come from kubernetes.io/tls Secrets in the Ingress's
// namespace and are chosen by SNI (exact host, then one-label wildcard),
// falling back to a self-signed certificate generated at start. As in
// ingress-nginx, plain-HTTP requests to a host that has TLS are redirected
// (308) to HTTPS unless the Ingress sets the annotation
// knet.dev/ssl-redirect: "false"; "true" forces the redirect also for
// hosts without TLS.
//
// Backends: the Service port is resolved to the endpoint port through the
// EndpointSlice port of the same name; requests go round-robin over ready
// endpoints, each with its own keep-alive pool, on a lean HTTP/1.1 path.
// An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) without a body is
// retried once on another endpoint after a connection failure. When the
// Service port has appProtocol "kubernetes.io/h2c" or "grpc", the backend is
// spoken to in cleartext HTTP/2 (prior knowledge), which is what gRPC needs
// (trailers, streaming). Websocket (and other Upgrade) requests over
// HTTP/1.1 are passed through on a dedicated backend connection.
//
// Front connections: HTTP/1.1 requests that make up nearly all traffic
// (origin-form, Content-Length body or none) are parsed in place and
// forwarded, or answered (404, 503, 308), on a lean path with no
// per-request goroutine, context or map; client and backend sockets are read
// and written with raw non-blocking system calls inside the runtime poller,
// so that a long loopback write does not make the scheduler switch threads.
// A connection that brings anything else (HTTP/2 by ALPN, Upgrade, Expect,
// a chunked request body, HTTP/1.0, a malformed or large head, a request to
// an h2c backend) is handed, from its first unread byte, to net/http with
// the same handler for the rest of its life, so every rare and malformed
// case keeps net/http's behaviour. Differences: on the lean path a client
// that disconnects while its backend has not answered yet is noticed when
// the response is written, not before; and a request body the proxy answers
// without reading (404, 503, 308) ends the connection after the answer.
//
// Headers: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and
// X-Forwarded-Port are set from the connection (values sent by the client
// are replaced: this proxy is the edge). Hop-by-hop headers are dropped.
// The Host header is passed to the backend unchanged. HTTP/1.1 response
// trailers from backends are not forwarded (gRPC uses the HTTP/2 path).
package ingress
