#!/usr/bin/env bash
# Services benchmark: knet's service proxy vs kube-proxy v1.35.4 (nftables mode), side by side
# against one `knet up` cluster's API server. Prints a table; asserts nothing. Needs root.
#
#   bash bench/proxy/run.sh            # 10, 1k and 10k Services (~15 min on 2 cores)
#   bash bench/proxy/run.sh --quick    # 10 and 1k Services only (~3 min)
# The times assume an otherwise idle machine; a busy API server makes creating 10k Services slow.
#
# Further flags go to `proxybench run` (see bench/proxy/main.go), e.g. --trials-10k 5.
# CLUSTER=name picks the cluster name (default pbench); it must not be running already, since
# this script removes it at the end. KNET_BIN=path benchmarks (and runs the cluster with) another
# knet binary than bin/knet. At 10k Services kube-proxy's first full sync may take many minutes;
# --bound (default 10m) caps every wait, and a kube-proxy figure that hit it is a lower bound.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
cluster=${CLUSTER:-pbench}

# bin/knet is owned by the cmd/knet build (hack/build.sh); build it only when it is missing.
knet=${KNET_BIN:-bin/knet}
[ -n "${KNET_BIN:-}" ] || [ -x bin/knet ] || bash hack/build.sh
# The first build of kube-proxy takes a few minutes; later ones are cached.
[ -x bin/kube-proxy ] || go build -o bin/kube-proxy k8s.io/kubernetes/cmd/kube-proxy

work=$(mktemp -d /tmp/knet-proxybench-run.XXXXXX)
go build -o "$work/proxybench" ./bench/proxy
state="$work/state.json"

if [ -e "/var/lib/knet/$cluster/cluster.json" ]; then
	echo "cluster $cluster exists already; remove it ($knet down --name $cluster) or set CLUSTER=another-name" >&2
	exit 1
fi

cleanup() {
	rc=$?
	trap - EXIT INT TERM
	"$work/proxybench" cleanup --state "$state" || rc=1
	"$knet" down --name "$cluster" >/dev/null || { echo "knet down --name $cluster failed" >&2; rc=1; }
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

"$knet" up --name "$cluster" --nodes 1 --timeout 6m
echo "load before: $(cat /proc/loadavg)"
"$work/proxybench" run --cluster "$cluster" --state "$state" --knet "$knet" --kube-proxy bin/kube-proxy "$@"
echo "load after: $(cat /proc/loadavg)"
