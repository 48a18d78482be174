#!/usr/bin/env bash
# Installs what knet needs on a Debian machine (as root). Go 1.26 must already be installed.
set -euo pipefail
need=(nftables iproute2 util-linux iputils-ping iperf3 dnsutils curl conntrack busybox-static wrk socat dnsperf netcat-openbsd)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "Go 1.26 is required (https://go.dev/dl); put it in PATH" >&2; exit 1; }
