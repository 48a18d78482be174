//go:build tools

// Package tools pins binaries that knet builds from the Kubernetes module at the same version as
// the embedded control plane: agnhost (upstream test image, run as `/agnhost` in pods) and
// kube-proxy (the peer in bench/proxy).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
