#!/usr/bin/env bash
# LoadBalancer failover benchmark on a real 2-node `knet up` cluster: the longest time a client on
# the host gets no answer from http://<LB IP>/hostname when the `knet node` process of the node
# announcing the address is killed (5 kills with a backend on each node, 5 with both backends on
# the other node, 5 with the owner's underlay link cut for 3 s instead), and when the gratuitous
# ARP moved the host's neighbour entry. Prints a table; asserts nothing. Needs root; takes ~15
# minutes (each kill waits for a minute of node uptime).
#
#   bash bench/lb/run.sh [flags of bench/lb/main.go, e.g. --reps 3 --scenarios cut]
#
# CLUSTER=name picks the cluster name (default lbb); it must not exist already, since this script
# removes it at the end (also on failure).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
cluster=${CLUSTER:-lbb}

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
work=$(mktemp -d /tmp/knet-lbbench.XXXXXX)
go build -o "$work/lbbench" ./bench/lb

cleanup() {
	rc=$?
	trap - EXIT INT TERM
	# The node logs (speaker decisions, restarts) go away with the cluster; keep a copy.
	if [ -d "/var/lib/knet/$cluster/logs" ]; then
		rm -rf "/tmp/lbbench-logs-$cluster" && cp -r "/var/lib/knet/$cluster/logs" "/tmp/lbbench-logs-$cluster" &&
			echo "node logs: /tmp/lbbench-logs-$cluster" >&2
	fi
	bin/knet down --name "$cluster" >/dev/null || { echo "knet down --name $cluster failed" >&2; rc=1; }
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

bin/knet up --name "$cluster" --nodes 2 --timeout 6m
"$work/lbbench" --cluster "$cluster" "$@"
