package dnsdiff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	knetdns "knet/internal/dns"
)

// The differential test needs a Kubernetes API server and a CoreDNS binary,
// so it only runs when asked:
//
//	KNET_DNSDIFF=1 go test ./test/dnsdiff/ -run TestDifferential -v
//
// With KNET_DNSDIFF_KUBECONFIG it uses that cluster (objects go to the
// namespace "dnsdiff", removed afterwards); without it, it starts
// `bin/knet up --name dnsdiff --nodes 1` and removes it at the end.
// KNET_DNSDIFF_COREDNS overrides bin/coredns (build it with
// `GOFLAGS=-mod=mod GOBIN=$PWD/bin go install github.com/coredns/coredns@v1.15.0`).
const (
	envEnable     = "KNET_DNSDIFF"
	envKubeconfig = "KNET_DNSDIFF_KUBECONFIG"
	envCoreDNS    = "KNET_DNSDIFF_COREDNS"
	clusterName   = "dnsdiff"
	zone          = "cluster.local"
)

// knownDifference explains a difference that comes from how the two servers
// are run in this test, not from knet's answers: both run on the host
// instead of as the kube-dns pods.
type knownDifference struct {
	name   string // lowercase query name
	qtype  uint16 // 0: any type
	reason string
}

var knownDifferences = []knownDifference{
	{"ns.dns." + zone + ".", 0, "CoreDNS finds ns.dns through the kube-dns endpoint that carries its own pod IP; on the host's loopback there is none and it answers NODATA, knet answers the kube-dns ClusterIP"},
	{zone + ".", dns.TypeNS, "apex NS comes from the same lookup as ns.dns: CoreDNS on loopback answers NODATA, knet what CoreDNS answers in its pod (the kube-dns Service's name with its ClusterIP as glue)"},
	{"in-addr.arpa.", dns.TypeNS, "reverse apex NS: as the cluster apex NS (CoreDNS on loopback finds no kube-dns endpoint of its own)"},
	// Neither server has an upstream here. CoreDNS's plugin chain then ends
	// in SERVFAIL ("no next plugin"); knet answers REFUSED by design (see
	// dns.Config.Upstreams). With upstreams both forward.
	{"example.com.", 0, "no upstream: CoreDNS SERVFAIL (end of plugin chain), knet REFUSED by design"},
}

// noUpstream reports whether q is a reverse-zone question the kubernetes
// plugin cannot answer (a reverse name of no Service or endpoint, or a type
// other than PTR and SOA), which the Corefile's fallthrough sends to the
// (missing) next plugin.
func noUpstream(q Query, k, ref *dns.Msg) bool {
	name := strings.ToLower(q.Name)
	return (strings.HasSuffix(name, "in-addr.arpa.") || strings.HasSuffix(name, "ip6.arpa.")) &&
		k.Rcode == dns.RcodeRefused && ref.Rcode == dns.RcodeServerFailure && len(k.Answer) == 0 && len(ref.Answer) == 0
}

func TestDifferential(t *testing.T) {
	if os.Getenv(envEnable) != "1" {
		t.Skipf("differential test vs CoreDNS needs a cluster and bin/coredns: set %s=1 (see the comment at the top of %s)", envEnable, "dnsdiff_test.go")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	coredns := os.Getenv(envCoreDNS)
	if coredns == "" {
		coredns = filepath.Join(root, "bin", "coredns")
	}
	if _, err := os.Stat(coredns); err != nil {
		t.Skipf("no CoreDNS binary at %s: build it with `GOFLAGS=-mod=mod GOBIN=%s/bin go install github.com/coredns/coredns@v1.15.0` or set %s", coredns, root, envCoreDNS)
	}
	kubeconfig := os.Getenv(envKubeconfig)
	if kubeconfig == "" {
		kubeconfig = startCluster(t, filepath.Join(root, "bin", "knet"))
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	fx := NewFixture("dnsdiff")
	// Objects exist before the servers start, so both begin from the same
	// complete List instead of racing the watch.
	if err := fx.Apply(ctx, client); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fx.Delete(context.Background(), client); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	knet := startKnet(t, rc)
	plain := startCoreDNS(t, coredns, kubeconfig, false)
	cached := startCoreDNS(t, coredns, kubeconfig, true)
	webIP, err := fx.ClusterIP("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []string{knet, plain, cached} {
		waitAnswer(t, srv, "shared.shared-b.dnsdiff.svc."+zone+".", "10.244.250.100")
		waitAnswer(t, srv, "web.dnsdiff.svc."+zone+".", webIP.String())
	}

	queries, err := fx.Queries(zone)
	if err != nil {
		t.Fatal(err)
	}
	var bugs, known int
	raDiffs := map[string]int{}
	for _, q := range queries {
		k, err := Exchange(knet, q, 2*time.Second)
		if err != nil {
			t.Errorf("knet: %v", err)
			continue
		}
		ref, err := Exchange(plain, q, 2*time.Second)
		if err != nil {
			t.Errorf("CoreDNS: %v", err)
			continue
		}
		diffs := Diff(k, ref, Options{})
		// The cached CoreDNS is asked twice so the second answer comes from
		// its cache, which must not change anything but TTLs.
		var fromCache *dns.Msg
		for range 2 {
			if fromCache, err = Exchange(cached, q, 2*time.Second); err != nil {
				break
			}
		}
		if err != nil {
			t.Errorf("CoreDNS with cache: %v", err)
		} else {
			for _, d := range Diff(k, fromCache, Options{IgnoreTTL: true, IgnoreCase: true}) {
				diffs = appendNew(diffs, "vs cache: "+d)
			}
		}
		// One flag differing in every answer would bury the rest: count it
		// and report it once.
		diffs = slices.DeleteFunc(diffs, func(d string) bool {
			if strings.HasPrefix(strings.TrimPrefix(d, "vs cache: "), "RA flag:") {
				raDiffs[d]++
				return true
			}
			return false
		})
		if len(diffs) == 0 {
			continue
		}
		why := explained(q)
		if why == "" && noUpstream(q, k, ref) {
			why = "reverse-zone question the kubernetes plugin falls through, no upstream: CoreDNS SERVFAIL after fallthrough, knet REFUSED by design"
		}
		if why != "" {
			known++
			t.Logf("KNOWN %s: %s\n\t%s", q, why, strings.Join(diffs, "\n\t"))
			continue
		}
		bugs++
		t.Errorf("DIFF %s\n\t%s\n\tknet:\n%s\n\tCoreDNS:\n%s", q, strings.Join(diffs, "\n\t"), indent(k), indent(ref))
	}
	for d, n := range raDiffs {
		t.Errorf("DIFF in %d answers: %s", n, d)
	}
	t.Logf("%d queries: %d differ from CoreDNS v1.15.0, %d differ for known environment reasons", len(queries), bugs, known)
}

// appendNew adds d unless the comparison with the uncached server already
// reported the same difference.
func appendNew(diffs []string, d string) []string {
	for _, x := range diffs {
		if "vs cache: "+x == d {
			return diffs
		}
	}
	return append(diffs, d)
}

func explained(q Query) string {
	name := strings.ToLower(q.Name)
	for _, k := range knownDifferences {
		if k.name == name && (k.qtype == 0 || k.qtype == q.Type) {
			return k.reason
		}
	}
	return ""
}

func indent(m *dns.Msg) string {
	return "\t\t" + strings.ReplaceAll(strings.TrimSpace(m.String()), "\n", "\n\t\t")
}

// startCluster runs `knet up` for the test and `knet down` after it.
func startCluster(t *testing.T, knet string) string {
	t.Helper()
	if _, err := os.Stat(knet); err != nil {
		t.Skipf("no %s to start a cluster (bash hack/build.sh), and %s is not set", knet, envKubeconfig)
	}
	dir := filepath.Join("/var/lib/knet", clusterName)
	if _, err := os.Stat(filepath.Join(dir, "cluster.json")); err == nil {
		t.Fatalf("cluster %s exists already: remove it (%s down --name %s) or point %s at its kubeconfig", clusterName, knet, clusterName, envKubeconfig)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(knet, "down", "--name", clusterName).CombinedOutput(); err != nil {
			t.Errorf("knet down --name %s: %v\n%s", clusterName, err, out)
		}
	})
	out, err := exec.Command(knet, "up", "--name", clusterName, "--nodes", "1", "--timeout", "6m").CombinedOutput()
	if err != nil {
		t.Fatalf("knet up --name %s: %v\n%s", clusterName, err, out)
	}
	return filepath.Join(dir, "kubeconfig")
}

// freePort returns a loopback port free for both UDP and TCP right now.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port for UDP and TCP")
	return ""
}

// startKnet runs knet's DNS server in-process, as `knet dns` does but with a
// kubeconfig client, and returns its address once it is synced.
func startKnet(t *testing.T, rc *rest.Config) string {
	t.Helper()
	addr, health := freePort(t), freePort(t)
	source, err := knetdns.NewSource(rc)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	s, err := knetdns.New(knetdns.Config{
		Source:       source,
		Listen:       addr,
		HealthListen: health,
		Logger:       slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("knet dns: %v", err)
		}
		if t.Failed() {
			mu.Lock()
			t.Logf("knet dns log:\n%s", logs.String())
			mu.Unlock()
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("knet dns exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("knet dns not ready after a minute: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Corefile is the reference configuration: the kubernetes plugin as
// kubeadm's default Corefile sets it up for the cluster zone, pods insecure,
// reverse zones falling through, optionally behind a 30 s cache.
func Corefile(addr, kubeconfig string, cache bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("corefile: %w", err)
	}
	c := fmt.Sprintf(".:%s {\n\tbind %s\n\tkubernetes %s in-addr.arpa ip6.arpa {\n\t\tkubeconfig %s\n\t\tpods insecure\n\t\tfallthrough in-addr.arpa ip6.arpa\n\t}\n", port, host, zone, kubeconfig)
	if cache {
		c += "\tcache 30\n"
	}
	return c + "}\n", nil
}

// startCoreDNS runs the CoreDNS binary on a free loopback port and stops
// that process (by its PID) after the test.
func startCoreDNS(t *testing.T, bin, kubeconfig string, cache bool) string {
	t.Helper()
	addr := freePort(t)
	cf, err := Corefile(addr, kubeconfig, cache)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(path, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	cmd := exec.Command(bin, "-conf", path)
	cmd.Stdout, cmd.Stderr = lockedWriter{&mu, &logs}, lockedWriter{&mu, &logs}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			mu.Lock()
			t.Logf("CoreDNS (cache %v) log:\n%s", cache, logs.String())
			mu.Unlock()
		}
	})
	select {
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("CoreDNS exited at once: %v\n%s", err, logs.String())
	case <-time.After(200 * time.Millisecond):
	}
	return addr
}

// waitAnswer polls server until name A includes want, so the comparison
// starts only when the server has the fixture.
func waitAnswer(t *testing.T, server, name, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		m, err := Exchange(server, Query{Name: name, Type: dns.TypeA}, time.Second)
		if err == nil {
			for _, rr := range m.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() == want {
					return
				}
			}
			err = errors.New(strings.ReplaceAll(m.String(), "\n", " "))
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never answered %s A with %s: last %v", server, name, want, last)
}
