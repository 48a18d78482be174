package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodToPodEverywhereWithoutNAT: 4 netexec pods spread over both nodes; every pod reaches
// every other pod's IP, the server sees the client's own pod IP, and the host reaches pods.
func TestPodToPodEverywhereWithoutNAT(t *testing.T) {
	checkPodToPod(t)
}

// checkPodToPod is the pod network's end-to-end contract, run against the cluster the package's
// client points at.
func checkPodToPod(t *testing.T) {
	ns := testNamespace(t)
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) < 2 {
		t.Fatalf("need 2 nodes: %v", err)
	}
	var pods []*corev1.Pod
	for i := 0; i < 4; i++ {
		p := netexecPod(fmt.Sprintf("net%d", i), map[string]string{"app": "net"})
		p.Spec.NodeName = nodes.Items[i%2].Name // spread deterministically over both nodes
		createPod(t, ns, p)
	}
	for i := 0; i < 4; i++ {
		pods = append(pods, waitPodReady(t, ns, fmt.Sprintf("net%d", i)))
	}
	seen := map[string]bool{}
	for _, p := range pods {
		if seen[p.Status.PodIP] {
			t.Fatalf("duplicate pod IP %s", p.Status.PodIP)
		}
		seen[p.Status.PodIP] = true
	}
	for _, src := range pods {
		for _, dst := range pods {
			if src.Name == dst.Name {
				continue
			}
			url := fmt.Sprintf("http://%s:8080/clientip", dst.Status.PodIP)
			out, err := execIn(t, ns, src.Name, "curl", "-s", "--max-time", "3", url)
			if err != nil {
				t.Errorf("%s (%s, %s) → %s (%s, %s): %v", src.Name, src.Status.PodIP, src.Spec.NodeName, dst.Name, dst.Status.PodIP, dst.Spec.NodeName, err)
				continue
			}
			host := out[:strings.LastIndex(out, ":")]
			if host != src.Status.PodIP {
				t.Errorf("%s → %s: server saw client %q, want the client's pod IP %s (NAT?)", src.Name, dst.Name, host, src.Status.PodIP)
			}
		}
	}
	// The host reaches every pod IP through knet's underlay bridge.
	hc := &http.Client{Timeout: 3 * time.Second}
	for _, p := range pods {
		resp, err := hc.Get(fmt.Sprintf("http://%s:8080/hostname", p.Status.PodIP))
		if err != nil {
			t.Errorf("host → %s (%s): %v", p.Name, p.Status.PodIP, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != p.Name {
			t.Errorf("host → %s answered %q", p.Status.PodIP, b)
		}
	}
}
