package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
)

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// startForTest starts a control plane and registers its shutdown; the
// returned stop cancels it and waits for Done.
func startForTest(t *testing.T, cfg Config) (*ControlPlane, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-cp.Done():
		case <-time.After(2 * time.Minute):
			t.Errorf("control plane did not stop within 2 minutes")
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			logTail(t, cp.logFile, 60)
		}
	})
	return cp, stop
}

// logTail shows the end of the components' log, where the cause of a
// failure usually is.
func logTail(t *testing.T, path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("read %s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	t.Logf("last %d lines of %s:\n%s", min(n, len(lines)), path, strings.Join(lines[max(0, len(lines)-n):], "\n"))
}

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole control plane")
	}
	ports := freePorts(t, 3)
	// 127.0.0.2 stands in for the underlay gateway: it is a second address
	// (so both listeners and the node kubeconfig's server are exercised)
	// that exists on every Linux host without touching its interfaces.
	cfg := Config{
		DataDir:          t.TempDir(),
		BindAddress:      "127.0.0.1",
		AdvertiseAddress: net.ParseIP("127.0.0.2"),
		SecurePort:       ports[0],
		EtcdPort:         ports[1],
		EtcdPeerPort:     ports[2],
		Logger:           slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}

	cp, stop := startForTest(t, cfg)
	stats := cp.Stats()
	t.Logf("Start to /readyz ok: %.2fs, RSS after start: %d MiB", stats.Ready.Seconds(), stats.RSSBytes>>20)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := kubernetes.NewForConfig(cp.RestConfig())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("admin kubeconfig", func(t *testing.T) {
		rc, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("https://127.0.0.1:%d", cfg.SecurePort); rc.Host != want {
			t.Errorf("admin kubeconfig server = %q, want %q", rc.Host, want)
		}
		c := kubernetes.NewForConfigOrDie(rc)
		if _, err := c.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Errorf("admin kubeconfig cannot read kube-system: %v", err)
		}
	})

	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "knet-test"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Namespace: %v", err)
	}

	t.Run("node gets podCIDR from ClusterCIDR", func(t *testing.T) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
		if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Node: %v", err)
		}
		var podCIDR string
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			podCIDR = n.Spec.PodCIDR
			return podCIDR != "", nil
		})
		if err != nil {
			t.Fatalf("Node node-a has no spec.podCIDR after 30s (node-ipam controller not running?): %v", err)
		}
		got, err := netip.ParsePrefix(podCIDR)
		if err != nil {
			t.Fatalf("podCIDR %q: %v", podCIDR, err)
		}
		cluster := netip.MustParsePrefix("10.244.0.0/16")
		if got.Bits() != 24 || !cluster.Contains(got.Addr()) {
			t.Errorf("podCIDR = %s, want a /24 inside %s", got, cluster)
		}
	})

	t.Run("kubernetes Service", func(t *testing.T) {
		var svc *corev1.Service
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			var err error
			svc, err = admin.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			t.Fatalf("Service default/kubernetes missing: %v", err)
		}
		if svc.Spec.ClusterIP != "10.96.0.1" {
			t.Errorf("kubernetes ClusterIP = %s, want 10.96.0.1", svc.Spec.ClusterIP)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.IntValue() != cfg.SecurePort {
			t.Errorf("kubernetes ports = %+v, want 443 -> %d", svc.Spec.Ports, cfg.SecurePort)
		}
	})

	t.Run("node credentials are limited by the Node authorizer", func(t *testing.T) {
		creds, err := cp.NodeCredentials("node-a", net.ParseIP("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := clientcmd.BuildConfigFromFlags("", creds.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("https://127.0.0.2:%d", cfg.SecurePort); rc.Host != want {
			t.Errorf("node kubeconfig server = %q, want the advertise address %q", rc.Host, want)
		}
		node := kubernetes.NewForConfigOrDie(rc)
		if _, err := node.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
			t.Errorf("node-a cannot read its own Node: %v", err)
		}
		_, err = node.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("node-a listing Secrets in kube-system: err = %v, want Forbidden", err)
		}
		// NodeRestriction: a node may not change another node.
		other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}
		if _, err := node.CoreV1().Nodes().Create(ctx, other, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("node-a creating Node node-b: err = %v, want Forbidden", err)
		}
	})

	t.Run("version", func(t *testing.T) {
		info, err := admin.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(version.Get().GitVersion, "v0.0.0") {
			t.Logf("built without -ldflags \"-X k8s.io/component-base/version.gitVersion=v1.35.4\"; server reports %s, not checking it", info.GitVersion)
			return
		}
		if info.GitVersion != "v1.35.4" {
			t.Errorf("/version gitVersion = %s, want v1.35.4", info.GitVersion)
		}
	})

	t.Run("klog goes to the log file", func(t *testing.T) {
		data, err := os.ReadFile(cp.logFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "Golang settings") {
			t.Errorf("%s lacks the API server's startup lines", cp.logFile)
		}
	})

	// Last, because it needs the controller's 60 s node startup grace period:
	// node-a has no kubelet, so the node-lifecycle controller must mark it
	// Ready=Unknown and taint it unreachable (admission only ever adds the
	// not-ready taint, so this one proves the controller runs). It adds no
	// NoExecute taint here: with every node of the zone down, upstream
	// deliberately stops evicting ("full disruption").
	t.Run("node lifecycle marks a silent node unreachable", func(t *testing.T) {
		var last *corev1.Node
		err := wait.PollUntilContextTimeout(ctx, time.Second, 120*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			last = n
			unknown, unreachable := false, false
			for _, c := range n.Status.Conditions {
				unknown = unknown || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionUnknown)
			}
			for _, taint := range n.Spec.Taints {
				unreachable = unreachable || taint.Key == corev1.TaintNodeUnreachable
			}
			return unknown && unreachable, nil
		})
		if err != nil {
			t.Fatalf("node-a not marked Ready=Unknown and unreachable: %v; conditions %+v, taints %+v",
				err, last.Status.Conditions, last.Spec.Taints)
		}
	})

	stop()
	if err := cp.Err(); err != nil {
		t.Fatalf("Err after a requested stop = %v, want nil", err)
	}

	t.Run("restart keeps state", func(t *testing.T) {
		cp2, _ := startForTest(t, cfg)
		t.Logf("restart to /readyz ok: %.2fs, RSS: %d MiB", cp2.Stats().Ready.Seconds(), cp2.Stats().RSSBytes>>20)
		c, err := kubernetes.NewForConfig(cp2.RestConfig())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Namespaces().Get(ctx, "knet-test", metav1.GetOptions{}); err != nil {
			t.Errorf("Namespace knet-test after restart: %v", err)
		}
		n, err := c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Node node-a after restart: %v", err)
		}
		if n.Spec.PodCIDR == "" {
			t.Error("node-a lost its podCIDR across the restart")
		}
		// The kubeconfig handed to node-a before the restart still works.
		creds, err := cp2.NodeCredentials("node-a", net.ParseIP("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := clientcmd.BuildConfigFromFlags("", creds.Kubeconfig)
		if _, err := kubernetes.NewForConfigOrDie(rc).CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
			t.Errorf("node-a credentials after restart: %v", err)
		}
	})
}

// A busy API port is the likeliest start failure (another cluster running):
// Start must say so and release what it already started, etcd included.
func TestStartFailsCleanlyWhenPortBusy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ports := freePorts(t, 2)
	cfg := Config{
		DataDir:      t.TempDir(),
		SecurePort:   busy.Addr().(*net.TCPAddr).Port,
		EtcdPort:     ports[0],
		EtcdPeerPort: ports[1],
		Logger:       slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := Start(ctx, cfg)
	if err == nil {
		cancel()
		<-cp.Done()
		t.Fatal("Start succeeded on a busy port")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("error %q does not name the busy address %s", err, busy.Addr())
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("etcd port %d still held after the failed Start: %v", p, err)
			continue
		}
		l.Close()
	}
}
