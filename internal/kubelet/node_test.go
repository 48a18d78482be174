package kubelet

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestInitialNode(t *testing.T) {
	cfg := Config{NodeName: "knet-worker", NodeIP: net.ParseIP("172.18.0.3"), StateDir: t.TempDir(), Version: "v0.1.0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	cfg.Defaults()
	confDir := t.TempDir()
	k := newKubelet(cfg, nil, newCNINetwork(confDir, "/none", t.TempDir()), noVolumes{})
	n := k.initialNode()
	for k, v := range map[string]string{"kubernetes.io/hostname": "knet-worker", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"} {
		if n.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, n.Labels[k], v)
		}
	}
	if _, ok := n.Labels["type"]; ok || len(n.Spec.Taints) != 0 {
		t.Error("virtual-kubelet's type label or a taint is set")
	}
	if n.Status.NodeInfo.KubeletVersion != "v1.35.4" || n.Status.NodeInfo.ContainerRuntimeVersion != "knet://v0.1.0" ||
		n.Status.NodeInfo.OperatingSystem != "linux" || n.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Errorf("nodeInfo = %+v endpoints %+v", n.Status.NodeInfo, n.Status.DaemonEndpoints)
	}
	if len(n.Status.Addresses) != 2 || n.Status.Addresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "172.18.0.3"}) {
		t.Errorf("addresses = %v", n.Status.Addresses)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods, corev1.ResourceEphemeralStorage} {
		q, ok := n.Status.Allocatable[r]
		if !ok || q.IsZero() {
			t.Errorf("allocatable %s = %v", r, q)
		}
	}
	if q := n.Status.Capacity[corev1.ResourcePods]; q.Value() != 110 {
		t.Errorf("pods capacity = %v", q)
	}
	ready := func(n *corev1.Node) corev1.NodeCondition {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c
			}
		}
		t.Fatal("no Ready condition")
		return corev1.NodeCondition{}
	}
	if c := ready(n); c.Status != corev1.ConditionFalse || c.Message == "" {
		t.Errorf("Ready without CNI config = %+v", c)
	}

	// The conflist appears: watchNetwork reports Ready.
	got := make(chan *corev1.Node, 1)
	nodeProvider{k}.NotifyNodeStatus(t.Context(), func(n *corev1.Node) { got <- n })
	go k.watchNetwork(t.Context())
	os.WriteFile(filepath.Join(confDir, "10-knet.conflist"), []byte(`{"cniVersion":"1.0.0","name":"knet","plugins":[{"type":"knet"}]}`), 0o644)
	select {
	case n := <-got:
		if c := ready(n); c.Status != corev1.ConditionTrue || c.Reason != "KubeletReady" {
			t.Errorf("Ready with CNI config = %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no node status update after the CNI config appeared")
	}
}
