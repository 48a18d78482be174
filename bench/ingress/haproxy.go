package main

import (
	"fmt"
	"strings"
)

// haproxyConfig is the HAProxy equivalent of the bench Ingress: the same
// host and Prefix path to the same two endpoints, round-robin, keep-alive
// on both sides with backend connections shared across clients (http-reuse
// always, as knet's per-endpoint pools are), the same X-Forwarded-* headers
// knet sets, 404 for anything else, and TLS on a second frontend with the
// same certificate. One thread, as knet's Go runtime gets one core.
type haproxyConfig struct {
	HTTPPort, HTTPSPort int
	// CertBundle is a PEM file with the certificate followed by its key.
	CertBundle string
	Backends   []string // host:port
}

func (c haproxyConfig) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always

`)
	for _, fe := range []struct {
		name, bind, proto string
		port              int
	}{
		{"fe_http", fmt.Sprintf("127.0.0.1:%d", c.HTTPPort), "http", c.HTTPPort},
		{"fe_https", fmt.Sprintf("127.0.0.1:%d ssl crt %s alpn h2,http/1.1", c.HTTPSPort, c.CertBundle), "https", c.HTTPSPort},
	} {
		// Host without port, case-insensitive; Prefix "/hostname" matches
		// "/hostname" and "/hostname/..." but not "/hostnamex", as in knet.
		fmt.Fprintf(&b, `frontend %s
    bind %s
    option forwardfor
    http-request set-header X-Forwarded-Proto %s
    http-request set-header X-Forwarded-Host %%[req.hdr(host)]
    http-request set-header X-Forwarded-Port %d
    acl host_bench req.hdr(host),field(1,:),lower -m str %s
    acl path_bench path -m str %s
    acl path_bench path -m beg %s/
    use_backend be_svc if host_bench path_bench
    default_backend be_404

`, fe.name, fe.bind, fe.proto, fe.port, benchHost, benchPath, benchPath)
	}
	b.WriteString("backend be_svc\n    balance roundrobin\n")
	for i, be := range c.Backends {
		fmt.Fprintf(&b, "    server ep%d %s\n", i, be)
	}
	b.WriteString(`
backend be_404
    http-request return status 404 content-type text/plain string "404 page not found"
`)
	return b.String()
}
