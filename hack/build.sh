#!/usr/bin/env bash
# Builds bin/knet (control plane, kubelet, CNI plugin, kubectl in one binary) and bin/agnhost
# (the upstream e2e test image's binary, run as /agnhost inside pods). Incremental: a warm Go
# cache rebuilds in seconds; the first build of the Kubernetes modules takes ~10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
version=v1.35.4
mkdir -p bin
go build -ldflags "-X k8s.io/component-base/version.gitVersion=$version" -o bin/knet ./cmd/knet
CGO_ENABLED=0 go build -o bin/knet-sandbox ./internal/sandbox/helper
CGO_ENABLED=0 go build -o bin/knet-cni ./internal/cni/plugin  # the CNI plugin the nodes install: no Kubernetes init per exec
CGO_ENABLED=0 go build -o bin/knet-dns ./cmd/knet-dns  # `knet dns` execs it when present: DNS without the control plane
CGO_ENABLED=0 go build -o bin/agnhost k8s.io/kubernetes/test/images/agnhost
# Files the agnhost image ships beside the binary (porter serves TLS with them).
mkdir -p bin/agnhost-files
porter=$(go list -f '{{.Dir}}' k8s.io/kubernetes/test/images/agnhost/porter)
cp "$porter/localhost.crt" "$porter/localhost.key" bin/agnhost-files/
