package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestVXLANPodNetwork starts a second cluster with `--pod-network vxlan` and runs the same
// pod-to-pod contract on it; it also checks that the routes to the other node's pods really go
// through the VXLAN device, so a silent fallback to host-gw cannot pass.
func TestVXLANPodNetwork(t *testing.T) {
	name := clusterName + "vx"
	up := exec.Command(knetBin, "up", "--name", name, "--nodes", "2", "--pod-network", "vxlan")
	out, err := up.CombinedOutput()
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join("/var/lib/knet", name, "logs", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s (last 3000 bytes)\n%s", l, tail(b, 3000))
			}
		}
		if out, err := exec.Command(knetBin, "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("knet down --name %s: %v\n%s", name, err, out)
		}
	})
	if err != nil {
		t.Fatalf("knet up --pod-network vxlan: %v\n%s", err, out)
	}

	// Point the package's helpers at the VXLAN cluster for this test (e2e tests run one at a
	// time) and back at the main cluster afterwards.
	savedKubeconfig, savedClient, savedRest := kubeconfig, client, restConfig
	t.Cleanup(func() { kubeconfig, client, restConfig = savedKubeconfig, savedClient, savedRest })
	kubeconfig = filepath.Join("/var/lib/knet", name, "kubeconfig")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 100, 200
	if client, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	restConfig = rc

	checkPodToPod(t)

	// Each node routes the other node's pod CIDR through knet.vxlan, not via the underlay.
	for i := 1; i <= 2; i++ {
		netns := fmt.Sprintf("knet-%s-node%d", name, i)
		var routes string
		eventually(t, 10*time.Second, func() error {
			b, err := exec.Command("ip", "-n", netns, "route", "show", "dev", "knet.vxlan").CombinedOutput()
			routes = string(b)
			if err != nil || !strings.Contains(routes, " via ") {
				return fmt.Errorf("%s: no pod route over knet.vxlan: %v %s", netns, err, routes)
			}
			return nil
		})
		b, _ := exec.Command("ip", "-n", netns, "route", "show", "dev", "eth0").CombinedOutput()
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "10.") && strings.Contains(line, " via ") {
				t.Errorf("%s routes pods over the underlay in vxlan mode: %q", netns, line)
			}
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
