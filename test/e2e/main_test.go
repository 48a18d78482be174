// Package e2e runs knet end to end: a real `knet up` cluster (the bin/knet binary built by
// hack/build.sh), objects created through the API, and checks made from inside pods with the
// embedded kubectl (exec goes API server → kubelet → pod, as for any user).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// clusterName is "e2e" unless KNET_E2E_NAME names another (so two engineers' runs on one machine
// do not collide).
var clusterName = func() string {
	if n := os.Getenv("KNET_E2E_NAME"); n != "" {
		return n
	}
	return "e2e"
}()

var (
	knetBin    string
	kubeconfig string
	client     kubernetes.Interface
	restConfig *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: needs root (knet up creates namespaces); run hack/test.sh as root")
		return 1
	}
	knetBin = os.Getenv("KNET_BIN")
	if knetBin == "" {
		knetBin, _ = filepath.Abs("../../bin/knet")
	}
	if _, err := os.Stat(knetBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v — build it first with hack/build.sh\n", err)
		return 1
	}
	before := kernelSnapshot()
	up := exec.Command(knetBin, "up", "--name", clusterName, "--nodes", "2")
	up.Stdout, up.Stderr = os.Stdout, os.Stderr
	start := time.Now()
	err := up.Run()
	down := func() int {
		out, err := exec.Command(knetBin, "down", "--name", clusterName).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: knet down: %v\n%s", err, out)
			return 1
		}
		after := kernelSnapshot()
		if b, a := withoutOthers(before), withoutOthers(after); a != b {
			fmt.Fprintf(os.Stderr, "e2e: kernel state after knet down differs from before knet up:\n%s", diffLines(b, a))
			return 1
		}
		fmt.Println("e2e: knet down restored the kernel state exactly")
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: knet up: %v\n", err)
		down()
		return 1
	}
	fmt.Printf("e2e: cluster up in %.1fs\n", time.Since(start).Seconds())
	kubeconfig = filepath.Join("/var/lib/knet", clusterName, "kubeconfig")
	restConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err == nil {
		restConfig.QPS, restConfig.Burst = 100, 200
		client, err = kubernetes.NewForConfig(restConfig)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: client: %v\n", err)
		down()
		return 1
	}
	code := m.Run()
	if code != 0 {
		dumpLogs()
	}
	if down() != 0 && code == 0 {
		code = 1
	}
	return code
}

// kernelSnapshot is the state `knet down` must restore: links, named namespaces, routes,
// nftables tables and mounts under knet's state directory.
func kernelSnapshot() string {
	noteOtherClusters()
	var b strings.Builder
	for _, c := range [][]string{{"ip", "-br", "link"}, {"ip", "netns", "list"}, {"ip", "route", "show", "table", "all"}, {"nft", "list", "tables"}} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		b.Write(out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, "/var/lib/knet") || strings.Contains(line, "/run/netns") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// others collects the other knet clusters seen on this machine during the run (a developer's,
// a benchmark's): their links, routes and mounts are not ours to compare, also when they come or
// go between the two snapshots.
var others = map[string]string{}

func noteOtherClusters() {
	files, _ := filepath.Glob("/var/lib/knet/*/cluster.json")
	for _, f := range files {
		var l struct {
			Name   string `json:"name"`
			Index  int    `json:"index"`
			Bridge string `json:"bridge"`
		}
		b, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(b, &l) != nil || l.Name == clusterName {
			continue
		}
		others[l.Name] = strings.Join([]string{
			regexp.QuoteMeta(l.Bridge) + `\b`, regexp.QuoteMeta(l.Bridge) + `n\d`, `knet-` + regexp.QuoteMeta(l.Name) + `-`,
			`/var/lib/knet/` + regexp.QuoteMeta(l.Name) + `/`, fmt.Sprintf(`metric %d\b`, 1000+l.Index),
		}, "|")
	}
}

// withoutOthers drops the lines that belong to other clusters.
func withoutOthers(snapshot string) string {
	// Throwaway namespaces of other packages' privileged tests and benchmarks running at the
	// same time ("knettest-…", bench/proxy's "knetbench-…"); those check their own cleanup.
	alts := []string{`knettest-`, `knetbench-`}
	for _, a := range others {
		alts = append(alts, a)
	}
	re := regexp.MustCompile(strings.Join(alts, "|"))
	var kept []string
	for _, line := range strings.Split(snapshot, "\n") {
		if !re.MatchString(line) {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

func diffLines(a, b string) string {
	seen := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		seen[l]++
	}
	var out strings.Builder
	for _, l := range strings.Split(b, "\n") {
		if seen[l] > 0 {
			seen[l]--
			continue
		}
		out.WriteString("+ " + l + "\n")
	}
	for l, n := range seen {
		if n > 0 && l != "" {
			out.WriteString("- " + l + "\n")
		}
	}
	return out.String()
}

func dumpLogs() {
	// What a user would look at first: the objects, events and the add-ons' own logs.
	for _, args := range [][]string{
		{"get", "nodes,pods,svc,ingress", "-A", "-o", "wide"},
		{"get", "events", "-A", "--field-selector", "type=Warning"},
		{"logs", "-n", "kube-system", "deployment/knet-ingress", "--tail=50"},
		{"logs", "-n", "kube-system", "deployment/knet-dns", "--tail=20"},
	} {
		out, err := exec.Command(knetBin, append([]string{"kubectl", "--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		fmt.Fprintf(os.Stderr, "==> kubectl %s (%v) <==\n%s\n", strings.Join(args, " "), err, out)
	}
	logs, _ := filepath.Glob(filepath.Join("/var/lib/knet", clusterName, "logs", "*.log"))
	logs = append(logs, filepath.Join("/var/lib/knet", clusterName, "daemon.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		if len(b) > 20000 {
			b = b[len(b)-20000:]
		}
		fmt.Fprintf(os.Stderr, "==> %s (tail) <==\n%s\n", f, b)
	}
}

// kubectl runs the embedded kubectl against the test cluster.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, knetBin, append([]string{"kubectl", "--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
