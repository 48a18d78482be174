#!/usr/bin/env bash
# NetworkPolicy benchmark on a real 2-node `knet up` cluster: create → first blocked and
# delete → first allowed latency (20 trials each), and new connections per second with 1000
# other NetworkPolicies present vs none. Prints a table; asserts nothing. Needs root.
#
#   bash bench/netpol/run.sh [flags for `npbench run`, see bench/netpol/main.go]
#
# CLUSTER=name picks the cluster name (default npb); it must not exist already, since this script
# removes it at the end (also on failure).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
cluster=${CLUSTER:-npb}

# Rebuild bin/knet (hack/build.sh owns that build) only when it is older than the last commit
# of its sources: uncommitted edits of other packages may be work in progress.
src_commit=$(git log -1 --format=%ct -- cmd internal go.mod go.sum)
if [ ! -x bin/knet ] || [ "$(stat -c %Y bin/knet)" -lt "$src_commit" ]; then
	bash hack/build.sh
fi
if [ -e "/var/lib/knet/$cluster/cluster.json" ]; then
	echo "cluster $cluster exists already; remove it (bin/knet down --name $cluster) or set CLUSTER=another-name" >&2
	exit 1
fi
work=$(mktemp -d /tmp/knet-npbench.XXXXXX)
go build -o "$work/npbench" ./bench/netpol

cleanup() {
	rc=$?
	trap - EXIT INT TERM
	bin/knet down --name "$cluster" >/dev/null || { echo "knet down --name $cluster failed" >&2; rc=1; }
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

bin/knet up --name "$cluster" --nodes 2 --timeout 6m
"$work/npbench" run --cluster "$cluster" "$@"
