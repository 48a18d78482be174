//go:build tools

// Package tools pins binaries that knet builds from the Kubernetes module at the same version as
// the embedded control plane: agnhost (upstream test image, run as `/agnhost` in pods),
// kube-proxy (the peer in bench/proxy) and e2e.test (the upstream conformance suite run by
// hack/conformance.sh).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
