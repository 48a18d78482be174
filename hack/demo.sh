#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root), builds knet, starts a 2-node cluster with the demo
# Deployment, and shows pods talking to each other across nodes without NAT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/deps.sh
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
bash hack/build.sh
bin/knet up --nodes 2 -f examples/demo.yaml
k() { bin/knet kubectl "$@"; }
k rollout status deployment/hello --timeout=90s
k get nodes -o wide
k get pods -o wide
pods=($(k get pods -l app=hello -o jsonpath='{.items[*].metadata.name}'))
ips=($(k get pods -l app=hello -o jsonpath='{.items[*].status.podIP}'))
echo
echo "Pod ${pods[0]} asks every pod who is calling (the answer is its own pod IP: no NAT):"
for ip in "${ips[@]}"; do
  printf '  %s -> %-12s says client=%s\n' "${pods[0]}" "$ip" "$(k exec "${pods[0]}" -- curl -s --max-time 3 "http://$ip:8080/clientip")"
done
echo
echo "The host reaches pod ${pods[1]} at ${ips[1]}: $(curl -s --max-time 3 "http://${ips[1]}:8080/hostname")"
echo
echo "The cluster keeps running. Try: bin/knet kubectl get pods -A   — stop it with: bin/knet down"
