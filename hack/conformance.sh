#!/usr/bin/env bash
# Runs the upstream Kubernetes network tests against a fresh knet cluster, in one command:
#
#   bash hack/conformance.sh [--suites conformance,netpol,cyclonus] [--procs N] [--no-build] [--keep]
#
# Suites (all three by default, in this order):
#   conformance  e2e.test --ginkgo.focus='\[sig-network\].*\[Conformance\]'        (47 specs)
#   netpol       e2e.test --ginkgo.focus='\[sig-network\] Netpol'
#                         --ginkgo.label-filter='Feature: containsAny NetworkPolicy'  (48 specs;
#                         45 when the kernel has no SCTP)
#   cyclonus     Cyclonus v0.5.6 `generate` over TCP and UDP (tags: $CYCLONUS_INCLUDE)
#
# It builds bin/e2e.test from k8s.io/kubernetes/test/e2e at the pinned v1.35.4 (~10 minutes the
# first time), bin/ginkgo (parallel runs) and bin/cyclonus (its own module, not knet's), builds
# bin/knet with hack/build.sh, starts `knet up --name conf --nodes 2`, runs the suites, writes JUnit
# files and logs to _out/conformance/ and the table to conformance/SUMMARY.md, and always runs
# `knet down --name conf` at the end (also on failure or Ctrl-C; --keep leaves the cluster up for
# debugging). The e2e framework's kubectl is bin/knet's embedded one (conformance/kubectl).
#
# Exit status: 0 when every selected suite ran and passed, 1 otherwise.
# Environment: CONFORMANCE_NAME (cluster name, default conf), CONFORMANCE_TIMEOUT (per e2e suite,
# default 3h), CYCLONUS_INCLUDE (default conflict; `all` for every default case), CYCLONUS_ARGS (extra `cyclonus generate` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

version=v1.35.4          # the Kubernetes version knet embeds; e2e.test must match it
cyclonus_version=v0.5.6
suites=conformance,netpol,cyclonus
procs=4
build=1
keep=0
name=${CONFORMANCE_NAME:-conf}
timeout=${CONFORMANCE_TIMEOUT:-3h}
cyclonus_include=${CYCLONUS_INCLUDE:-conflict}
out=$PWD/_out/conformance   # absolute: ginkgo runs e2e.test with bin/ as its working directory

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case $1 in
	--suites) suites=$2; shift 2 ;;
	--suites=*) suites=${1#*=}; shift ;;
	--procs) procs=$2; shift 2 ;;
	--procs=*) procs=${1#*=}; shift ;;
	--no-build) build=0; shift ;;
	--keep) keep=1; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "conformance: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "conformance: knet up needs root; run as root" >&2; exit 1; }

log() { printf '==> %s\n' "$*"; }

# A pod's root filesystem is the host's /, so the tools the agnhost image ships (Alpine's
# netcat-openbsd, bind-tools, curl, iproute2) must be on the host: the Service tests probe with
# `nc -v -t -w 2 HOST PORT` inside agnhost pods.
missing=()
for tool in nc dig nslookup curl ip; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
	echo "conformance: the upstream tests run ${missing[*]} inside agnhost pods, whose root is the host's /;" \
		"install them first: apt-get install -y netcat-openbsd bind9-dnsutils curl iproute2" >&2
	exit 1
fi

# --- build ---------------------------------------------------------------------------------------
ginkgo_version=$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
if [ "$build" = 1 ]; then
	log "building bin/knet (hack/build.sh)"
	bash hack/build.sh
	log "building bin/e2e.test (k8s.io/kubernetes/test/e2e $version)"
	go test -c -o bin/e2e.test -ldflags "-X k8s.io/component-base/version.gitVersion=$version" \
		k8s.io/kubernetes/test/e2e
	if [ "$procs" -gt 1 ] && ! { [ -x bin/ginkgo ] && bin/ginkgo version | grep -q "${ginkgo_version#v}"; }; then
		log "installing bin/ginkgo $ginkgo_version (the version e2e.test is built with)"
		GOBIN=$PWD/bin go install "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo_version"
	fi
	case ,$suites, in *,cyclonus,*)
		if ! [ -x bin/cyclonus ]; then
			log "installing bin/cyclonus $cyclonus_version (module mode: its own go.mod)"
			GOBIN=$PWD/bin go install "github.com/mattfenwick/cyclonus/cmd/cyclonus@$cyclonus_version"
		fi
	esac
fi
for b in bin/knet bin/agnhost bin/e2e.test; do
	[ -x "$b" ] || { echo "conformance: $b is missing; run without --no-build" >&2; exit 1; }
done
if [ "$procs" -gt 1 ] && ! [ -x bin/ginkgo ]; then
	echo "conformance: bin/ginkgo is missing (needed for --procs $procs); run without --no-build or use --procs 1" >&2
	exit 1
fi

# --- cluster -------------------------------------------------------------------------------------
kubeconfig=/var/lib/knet/$name/kubeconfig
cleanup() {
	status=$?
	if [ "$keep" = 1 ]; then
		log "leaving cluster $name up (--keep); remove it with: bin/knet down --name $name"
	else
		log "bin/knet down --name $name"
		bin/knet down --name "$name" || echo "conformance: knet down failed; run: bin/knet down --name $name" >&2
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$out"
mkdir -p "$out"
log "bin/knet up --name $name --nodes 2"
bin/knet up --name "$name" --nodes 2
bin/knet kubectl --kubeconfig "$kubeconfig" get nodes -o wide

# --- suites --------------------------------------------------------------------------------------
e2e_flags=(
	--kubeconfig="$kubeconfig"
	--provider=skeleton
	--kubectl-path="$PWD/conformance/kubectl"
	--report-dir="$out"
	--e2e-output-dir="$out"
	# On a failure the framework dumps the namespace (kept) and, per node, kubelet /metrics
	# latencies; knet's kubelet serves no /metrics, so that part only adds a 2-minute timeout and
	# a second [FAILED] to every failing spec.
	--max-nodes-to-gather-from=0
)
# run_e2e SUITE FOCUS [LABEL_FILTER]: runs e2e.test; its JUnit lands in $out/junit_SUITE_01.xml.
run_e2e() {
	local suite=$1 focus=$2 labels=${3:-}
	local -a ginkgo_flags=(--focus="$focus" --timeout="$timeout")
	[ -n "$labels" ] && ginkgo_flags+=(--label-filter="$labels")
	log "suite $suite: focus '$focus' ${labels:+labels '$labels' }($procs parallel), log $out/$suite.log"
	if [ "$procs" -gt 1 ]; then
		bin/ginkgo --procs="$procs" --no-color --silence-skips "${ginkgo_flags[@]}" bin/e2e.test -- \
			"${e2e_flags[@]}" --report-prefix="${suite}_"
	else
		bin/e2e.test "${ginkgo_flags[@]/#--/--ginkgo.}" --ginkgo.no-color --ginkgo.silence-skips \
			"${e2e_flags[@]}" --report-prefix="${suite}_"
	fi >"$out/$suite.log" 2>&1
}

run_cyclonus() {
	log "suite cyclonus: generate --include $cyclonus_include over TCP and UDP, log $out/cyclonus.log"
	# shellcheck disable=SC2086 # CYCLONUS_ARGS is a list of flags
	local -a include=(--include "$cyclonus_include")
	[ "$cyclonus_include" = all ] && include=()
	KUBECONFIG=$kubeconfig bin/cyclonus generate \
		"${include[@]}" \
		--server-protocol tcp,udp \
		--job-timeout-seconds 2 \
		--pod-creation-timeout-seconds 180 \
		--cleanup-namespaces \
		--junit-results-file "$out/junit_cyclonus_01.xml" \
		${CYCLONUS_ARGS:-} >"$out/cyclonus.log" 2>&1
}

note="knet commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), e2e.test $version, Cyclonus $cyclonus_version, \
$(date -u +%Y-%m-%d), \`knet up --nodes 2\`, ginkgo procs $procs. Skipped counts only specs that \
ran and called Skip; specs left out by the focus/label filter are not counted."
# The Netpol suite's three SCTP specs need SCTP in the kernel (agnhost porter listens on it);
# without it they do not fail fast: every probe of the 9x9 matrix waits out its timeout, and
# an interrupted run spends tens of minutes in them.
netpol_labels='Feature: containsAny NetworkPolicy'
command -v modprobe >/dev/null && modprobe sctp 2>/dev/null || true
if ! [ -d /proc/sys/net/sctp ]; then
	log "kernel has no SCTP: leaving out the Netpol [Feature:SCTPConnectivity] specs (3)"
	netpol_labels+=' && !Feature: containsAny SCTPConnectivity'
fi
failed=0
summary_args=()
IFS=, read -ra selected <<<"$suites"
for suite in "${selected[@]}"; do
	rc=0
	case $suite in
	conformance) run_e2e conformance '\[sig-network\].*\[Conformance\]' || rc=$? ;;
	netpol) run_e2e netpol '\[sig-network\] Netpol' "$netpol_labels" || rc=$? ;;
	cyclonus) run_cyclonus || rc=$? ;;
	*) echo "conformance: unknown suite $suite (want conformance, netpol, cyclonus)" >&2; exit 2 ;;
	esac
	log "suite $suite exited with $rc"
	[ "$rc" = 0 ] || failed=1
	summary_args+=("$suite=$out/junit_${suite}_01.xml")
	# Rewritten after every suite so an interrupted run still reports the suites that finished.
	go run conformance/summary.go -o conformance/SUMMARY.md -note "$note" "${summary_args[@]}" >/dev/null || failed=1
done
cat conformance/SUMMARY.md
exit "$failed"
