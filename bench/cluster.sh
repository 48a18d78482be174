#!/usr/bin/env bash
# Benchmark of `knet up`: time to ready, pod create→Ready p50/p99 for 50 pods, idle memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/build.sh
go run ./bench/cluster -knet bin/knet "$@"
