#!/usr/bin/env bash
# Runs every test: unit, privileged integration (real namespaces, nftables) and end-to-end (a
# real `knet up` cluster), with the uplink leak guard on. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/deps.sh
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
bash hack/build.sh
bash hack/leakguard.sh start
trap 'bash hack/leakguard.sh stop' EXIT
status=0
go test -p 1 -count=1 -timeout 40m ./... || status=$?
bash hack/leakguard.sh check || status=1
exit $status
