#!/usr/bin/env bash
# hack/check.sh — what a new user checks first, with nothing but kubectl and agnhost pods:
# start a cluster, run a Deployment, reach it by Service name and DNS, see pod IPs without NAT,
# read logs, port-forward, scale, replace a deleted pod, get a LoadBalancer address. Every step
# prints what it checks and the script stops at the first one that fails. It removes its
# cluster at the end.
#
#   bash hack/check.sh                # uses bin/knet and its embedded kubectl v1.35
#   KUBECTL=/path/to/kubectl bash hack/check.sh   # your own kubectl
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "check: knet up needs root" >&2; exit 1; }

name=${CHECK_NAME:-check}
knet=$PWD/bin/knet
img=registry.k8s.io/e2e-test-images/agnhost:2.56
kubeconfig=/var/lib/knet/$name/kubeconfig
kc() { ${KUBECTL:-$knet kubectl} --kubeconfig "$kubeconfig" "$@"; }
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "CHECK FAILED: $*" >&2; exit 1; }
pf_pid=
cleanup() {
	status=$?
	[ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null
	"$knet" down --name "$name" >/dev/null || echo "check: run bin/knet down --name $name" >&2
	[ "$status" = 0 ] && echo "check: all steps passed" || echo "check: failed (exit $status)"
}
trap cleanup EXIT

# dial asks the client pod's netexec (through the API server's pod proxy) to make N requests.
dial() { # host port request tries
	kc get --raw "/api/v1/namespaces/default/pods/client:8080/proxy/dial?host=$1&port=$2&request=$3&protocol=http&tries=$4"
}
names() { tr -d '{}[]"' | sed 's/responses://; s/errors:.*//' | tr ',' '\n' | grep -v '^$' | sort -u; }
# get fetches /hostname from host:port with bash's /dev/tcp (no curl needed).
get() {
	exec 3<>"/dev/tcp/$1/$2" || return 1
	printf 'GET /hostname HTTP/1.0\r\n\r\n' >&3
	tail -n1 <&3
	exec 3<&-
}

step "knet up --name $name --nodes 2"
"$knet" up --name "$name" --nodes 2 >/dev/null
kc get nodes -o wide
[ "$(kc get nodes --no-headers | grep -c ' Ready ')" = 2 ] || fail "want 2 Ready nodes"
version=$(kc version)
grep -q 'Server Version: v1.35.4' <<<"$version" || fail "API server is not v1.35.4: $version"

step "a Deployment of 3 agnhost netexec pods becomes available"
kc create deployment web --image=$img --replicas=3 --port=8080 -- /agnhost netexec --http-port=8080
kc rollout status deployment/web --timeout=120s
kc expose deployment web --port=80 --target-port=8080
kc run client --image=$img --port=8080 --command -- /agnhost netexec --http-port=8080
kc wait --for=condition=Ready pod/client --timeout=60s

step "hostname in a pod is the pod name; resolv.conf has the cluster search path"
[ "$(kc exec client -- hostname)" = client ] || fail "hostname is not the pod name"
suffix=$(kc exec client -- /agnhost dns-suffix)
grep -q default.svc.cluster.local <<<"$suffix" || fail "no default.svc.cluster.local search suffix: $suffix"

step "the Service spreads requests over all 3 pods, by short name and by FQDN"
for host in web web.default.svc.cluster.local; do
	got=$(dial "$host" 80 hostname 30 | names)
	echo "$host -> $(echo "$got" | tr '\n' ' ')"
	[ "$(echo "$got" | grep -c '^web-')" = 3 ] || fail "$host:80 reached $(echo "$got" | grep -c '^web-') of 3 pods"
done

step "pod to pod without NAT: each web pod sees the client's own pod IP"
client_ip=$(kc get pod client -o jsonpath='{.status.podIP}')
for ip in $(kc get pods -l app=web -o jsonpath='{.items[*].status.podIP}'); do
	seen=$(dial "$ip" 8080 clientip 1 | names | cut -d: -f1)
	echo "$ip saw $seen"
	[ "$seen" = "$client_ip" ] || fail "pod $ip saw client $seen, want $client_ip"
done

step "kubectl logs shows the requests"
logs=$(kc logs deployment/web --tail=20)
grep -q 'GET /hostname' <<<"$logs" || fail "no request in the web pods' logs: $logs"

step "kubectl port-forward reaches the pod"
kc port-forward pod/client 18080:8080 >/dev/null 2>&1 &
pf_pid=$!
answer=
for _ in $(seq 50); do
	answer=$(get 127.0.0.1 18080 2>/dev/null) && [ -n "$answer" ] && break
	sleep 0.2
done
[ "$answer" = client ] || fail "port-forward answered '$answer'"
kill "$pf_pid"
pf_pid=

step "scale to 1: the Service follows"
kc scale deployment web --replicas=1
kc rollout status deployment/web --timeout=60s
for _ in $(seq 30); do
	got=$(dial web 80 hostname 20 | names)
	[ "$(echo "$got" | grep -c '^web-')" = 1 ] && break
	sleep 1
done
[ "$(echo "$got" | grep -c '^web-')" = 1 ] || fail "after scaling to 1 the Service still reaches: $got"

step "a deleted pod is replaced and served"
old=$(kc get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
kc delete pod "$old" --wait=false
kc rollout status deployment/web --timeout=60s
for _ in $(seq 30); do
	got=$(dial web 80 hostname 5 | names | grep '^web-' || true)
	[ -n "$got" ] && [ "$got" != "$old" ] && break
	sleep 1
done
[ -n "$got" ] && [ "$got" != "$old" ] || fail "Service answers '$got' after $old was deleted"

step "a LoadBalancer Service gets an address that answers from this machine"
kc expose deployment web --name=web-lb --type=LoadBalancer --port=80 --target-port=8080
lb=
for _ in $(seq 50); do
	lb=$(kc get service web-lb -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
	[ -n "$lb" ] && break
	sleep 0.2
done
[ -n "$lb" ] || fail "web-lb got no address"
answer=
for _ in $(seq 20); do
	answer=$(get "$lb" 80 2>/dev/null) && [ -n "$answer" ] && break
	sleep 0.5
done
echo "http://$lb/hostname -> $answer"
case $answer in web-*) ;; *) fail "LoadBalancer $lb answered '$answer'" ;; esac
