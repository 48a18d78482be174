// Command ingress benchmarks knet's Ingress proxy (knet/internal/ingress)
// against HAProxy 2.6 side by side in one run: the same two agnhost netexec
// backends, the same host/path route, the same self-signed certificate, the
// same CPU pinning (proxy on one core, wrk and the backends on the other),
// all on 127.0.0.1. It measures req/s, p50 and p99 for plain HTTP and TLS
// (backend direct, HAProxy, knet), the time from an Ingress change to its
// effect, and the failed requests while the Ingress changes under load. It
// prints one table and asserts nothing.
//
// It owns the processes it starts (agnhost backends, haproxy, its own knet
// child, wrk, openssl) and stops them by PID; it owns its work directory
// (certificate, haproxy.cfg, logs). It listens and connects on 127.0.0.1
// only and never touches namespaces, routes, links or nftables.
//
// knet's proxy runs in a child process ("ingbench knet") so that it can be
// pinned to its own core; that child holds a client-go fake clientset with
// the Ingress, Services, EndpointSlices and TLS Secret, and serves a small
// control endpoint on 127.0.0.1 that changes the Ingress (and serves pprof).
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	mode, args := "run", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		mode, args = args[0], args[1:]
	}
	var err error
	switch mode {
	case "run":
		err = runMain(args)
	case "knet":
		err = knetMain(args)
	default:
		err = fmt.Errorf("unknown mode %q: use run (the benchmark) or knet (the proxy child it starts)", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingbench:", err)
		os.Exit(1)
	}
}
