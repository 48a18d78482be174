#!/usr/bin/env bash
# Pod network benchmark, two tables:
#  1. TCP throughput: builds two small knet clusters (host-gw and VXLAN) from
#     real network namespaces with knet's CNI plugin and podnet controller, runs
#     iperf3 same-node, cross-node and over a raw veth pair in the same run
#     (see TestPodnetThroughput for what the baseline is and how runs are
#     interleaved), prints ratios, and removes everything it created.
#  2. CNI ADD/DEL latency through libcni, which execs the plugin per operation
#     as the kubelet does: the full knet binary ($KNET_BIN, default bin/knet)
#     against the small knet-cni built here.
# The in-process ADD/DEL latency is `go test -run '^$' -bench AddDel ./internal/cni/`.
#
# Usage: sudo bench/podnet/run.sh [seconds-per-test (default 3)]
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then echo "run as root (network namespaces)" >&2; exit 1; fi
command -v iperf3 >/dev/null || { echo "iperf3 is required" >&2; exit 1; }

export KNET_BENCH=1
export KNET_BENCH_SECONDS="${1:-3}"
# Every namespace of this run starts with this prefix, so the trap below
# removes exactly what this run made, even if the Go helper is killed.
export KNET_BENCH_PREFIX="knettest-bench-$$-$RANDOM"

cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^${KNET_BENCH_PREFIX}-" || true); do
    ip netns del "$n" || true
  done
}
trap cleanup EXIT INT TERM

bindir=$(mktemp -d)
trap 'cleanup; rm -rf "$bindir"' EXIT INT TERM
CGO_ENABLED=0 go build -o "$bindir/knet-cni" ./internal/cni/plugin
export KNET_BENCH_CNI_BINS="knet (full binary)=${KNET_BIN:-$PWD/bin/knet},knet-cni=$bindir/knet-cni"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"

go test -count=1 -timeout 10m -run '^(TestPodnetThroughput|TestCNIExecLatency)$' -v ./bench/podnet/ \
  | grep -v -E '^(=== RUN|--- PASS|PASS$|ok )'
