#!/usr/bin/env bash
# Ingress benchmark: knet's Ingress proxy vs HAProxy 2.6, side by side on 127.0.0.1 (no cluster,
# no namespaces). Prints a table; asserts nothing. ~3 minutes on 2 cores.
#
#   bash bench/ingress/run.sh                 # defaults: wrk -t2 -c32 -d6s, 3 rounds
#   bash bench/ingress/run.sh -rounds 5 -profile always -keep
#
# Flags go to `ingbench run` (see bench/ingress/run.go). Needs haproxy (apt-get install -y haproxy;
# its systemd service is not used), wrk, taskset, openssl.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

# bin/agnhost comes from hack/build.sh; build it only when it is missing.
[ -x bin/agnhost ] || bash hack/build.sh
work=$(mktemp -d /tmp/knet-ingbench-bin.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/ingbench" ./bench/ingress
echo "load before: $(cat /proc/loadavg)" >&2
# The orchestrator (and its latency poller) shares the client CPU with wrk.
taskset -c 0 "$work/ingbench" run "$@"
