#!/usr/bin/env bash
# Cluster DNS benchmark: knet's DNS server vs CoreDNS v1.15.0's kubernetes plugin (with and without
# `cache 30`), both on the host's loopback, serving the same `knet up` cluster's API server and the
# test/dnsdiff fixture (20 Services, hand-made EndpointSlices). dnsperf (8 clients, 64 outstanding,
# 8 s) runs pinned to CPU 0, each server alone pinned to CPU 1. Two query sets: cluster names
# (A and SRV) and external names expanded through a pod's search path (NXDOMAIN in the zone).
# Prints QPS, mean/p50/p99 latency, RSS and knet/CoreDNS ratios; asserts nothing. Needs root and
# dnsperf (apt-get install dnsperf). ~3 minutes plus the cluster start.
#
#   bash bench/dns/run.sh
#
# CLUSTER=name picks the cluster name (default dnsb); it must not be running already, since this
# script removes it at the end. KNET_BIN=path uses another knet binary (default bin/knet); `knet
# dns` execs the lean knet-dns binary next to it when there is one, as in a cluster. COREDNS=path
# uses another CoreDNS binary (default bin/coredns, built on first use from the Go module proxy
# without touching knet's go.mod).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
cluster=${CLUSTER:-dnsb}
coredns=${COREDNS:-bin/coredns}
knet=${KNET_BIN:-bin/knet}
duration=8
clients=8
outstanding=64
# Loopback ports; other benchmarks on the machine use the common ones (agnhost took 18081).
knet_port=${KNET_PORT:-5331}
knet_health=${KNET_HEALTH_PORT:-18531}
coredns_port=${COREDNS_PORT:-5332}
for p in "$knet_port" "$knet_health" "$coredns_port"; do
	if ss -Hltun "sport = :$p" | grep -q .; then
		echo "port $p is in use on this machine: set KNET_PORT, KNET_HEALTH_PORT or COREDNS_PORT" >&2
		exit 1
	fi
done

command -v dnsperf >/dev/null || { echo "dnsperf is missing: apt-get install -y dnsperf" >&2; exit 1; }
# bin/knet is owned by the cmd/knet build (hack/build.sh); build it only when it is missing.
[ -x "$knet" ] || bash hack/build.sh
if [ ! -x "$coredns" ]; then
	# Module mode builds CoreDNS with its own go.mod; knet's go.mod is not read.
	(cd /tmp && GOFLAGS=-mod=mod GOBIN="$OLDPWD/bin" go install github.com/coredns/coredns@v1.15.0)
	coredns=bin/coredns
fi
if [ -e "/var/lib/knet/$cluster/cluster.json" ]; then
	echo "cluster $cluster exists already; remove it (bin/knet down --name $cluster) or set CLUSTER=another-name" >&2
	exit 1
fi

work=$(mktemp -d /tmp/knet-dnsbench.XXXXXX)
go build -o "$work/dnsbench" ./bench/dns
server_pid=""

stop_server() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=""
	fi
}
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	stop_server
	"$knet" down --name "$cluster" >/dev/null || { echo "knet down --name $cluster failed" >&2; rc=1; }
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

"$knet" up --name "$cluster" --nodes 1 --timeout 6m
kubeconfig=/var/lib/knet/$cluster/kubeconfig
"$work/dnsbench" setup --kubeconfig "$kubeconfig" --namespace dnsbench --out "$work"
sentinel=shared.shared-b.dnsbench.svc.cluster.local

corefile() { # corefile FILE with-cache
	{
		echo ".:$coredns_port {"
		echo "	bind 127.0.0.1"
		echo "	kubernetes cluster.local in-addr.arpa ip6.arpa {"
		echo "		kubeconfig $kubeconfig"
		echo "		pods insecure"
		echo "		fallthrough in-addr.arpa ip6.arpa"
		echo "	}"
		[ "$2" = yes ] && echo "	cache 30"
		echo "}"
	} >"$1"
}
corefile "$work/Corefile.cache" yes
corefile "$work/Corefile.nocache" no

# bench ID PORT: warm up, then a measured run and a verbose (latency) run per query set, then
# save the server's memory figures.
bench() {
	local id=$1 port=$2 q
	"$work/dnsbench" wait --server "127.0.0.1:$port" --name "$sentinel" || {
		echo "$id did not come up; its log:" >&2
		cat "$work/$id.log" >&2
		return 1
	}
	for q in cluster external; do
		taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/$q.txt" -c "$clients" -q "$outstanding" -l 2 >/dev/null
		taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/$q.txt" -c "$clients" -q "$outstanding" -l "$duration" \
			>"$work/${id}_$q.perf"
		taskset -c 0 dnsperf -s 127.0.0.1 -p "$port" -d "$work/$q.txt" -c "$clients" -q "$outstanding" -l "$duration" -v \
			>"$work/${id}_$q.verbose"
	done
	cp "/proc/$server_pid/status" "$work/$id.status"
	echo "$id: $(grep -E '^(VmRSS|VmHWM|RssAnon|RssFile)' "$work/$id.status" | tr -s ' \t\n' ' ')"
	echo "load: $(cat /proc/loadavg)"
}

echo "load before: $(cat /proc/loadavg)"
# The real `knet dns` takes only the in-cluster config: give it the knet-dns add-on's
# ServiceAccount token and the CA in a private mount namespace (a tmpfs over /run, seen by that
# process alone), and the API server through KUBERNETES_SERVICE_HOST/PORT.
read -r api_host api_port < <("$work/dnsbench" incluster --kubeconfig "$kubeconfig" --dir "$work/sa")
sa=/run/secrets/kubernetes.io/serviceaccount
KUBERNETES_SERVICE_HOST=$api_host KUBERNETES_SERVICE_PORT=$api_port \
	unshare --mount --propagation private sh -c \
	"mount -t tmpfs knet-dnsbench /run && mkdir -p $sa && cp '$work/sa/token' '$work/sa/ca.crt' $sa/ &&
	 exec taskset -c 1 $knet dns --listen 127.0.0.1:$knet_port --health-listen 127.0.0.1:$knet_health" \
	2>"$work/knet-bin.log" &
server_pid=$!
bench knet-bin "$knet_port"
echo "knet-bin was served by $(readlink "/proc/$server_pid/exe")"
stop_server

# knet's server as a library with a kubeconfig client: same code, a smaller binary.
taskset -c 1 "$work/dnsbench" serve-knet --kubeconfig "$kubeconfig" \
	--listen "127.0.0.1:$knet_port" --health-listen "127.0.0.1:$knet_health" 2>"$work/knet-lib.log" &
server_pid=$!
bench knet-lib "$knet_port"
stop_server

for mode in cache nocache; do
	taskset -c 1 "$coredns" -conf "$work/Corefile.$mode" >"$work/coredns-$mode.log" 2>&1 &
	server_pid=$!
	bench "coredns-$mode" "$coredns_port"
	stop_server
done
echo "load after: $(cat /proc/loadavg)"
echo
echo "dnsperf -c $clients -q $outstanding -l $duration on CPU 0; each server alone on CPU 1; $(nproc) CPUs, load as above"
"$work/dnsbench" report --dir "$work"
