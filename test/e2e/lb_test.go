package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

func lbService(name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(8080)}}},
	}
}

func waitLBAddress(t *testing.T, ns, name string) string {
	t.Helper()
	var ip string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return ip != "", nil
	})
	if err != nil {
		t.Fatalf("service %s got no LoadBalancer address: %v", name, err)
	}
	return ip
}

func httpGet(url string) (string, error) {
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	return string(b), err
}

func knetServiceURL(t *testing.T, ns, name string) string {
	t.Helper()
	out, err := exec.Command(knetBin, "service", name, "-n", ns, "--url", "--name", clusterName).CombinedOutput()
	if err != nil {
		t.Fatalf("knet service --url: %v: %s", err, out)
	}
	return strings.Fields(string(out))[0]
}

func TestLoadBalancerAddressesAnswerFromHost(t *testing.T) {
	ns := testNamespace(t)
	backends(t, ns, "lb-a", 1)
	backends(t, ns, "lb-b", 1)
	start := time.Now()
	createService(t, ns, lbService("lb-a", 80))
	createService(t, ns, lbService("lb-b", 80))
	a, b := waitLBAddress(t, ns, "lb-a"), waitLBAddress(t, ns, "lb-b")
	t.Logf("both LoadBalancer addresses assigned %s after creation", time.Since(start))
	if a == b {
		t.Fatalf("two LoadBalancer Services without a sharing key got the same address %s", a)
	}
	for name, ip := range map[string]string{"lb-a": a, "lb-b": b} {
		eventually(t, 15*time.Second, func() error {
			body, err := httpGet("http://" + ip + "/hostname")
			if err != nil || !strings.HasPrefix(body, name+"-") {
				return errorf("%s at %s answered %q (%v)", name, ip, body, err)
			}
			return nil
		})
		url := knetServiceURL(t, ns, name)
		if url != "http://"+ip+":80" {
			t.Errorf("knet service %s --url = %q, want http://%s:80", name, url, ip)
		}
	}
}

// TestFetcherTutorial: a server Deployment with 2 replicas, a fetcher calling it by Service
// name, the fetcher exposed as a LoadBalancer; fetching through the fetcher's URL from the host
// returns the server's answer.
func TestFetcherTutorial(t *testing.T) {
	ns := testNamespace(t)
	servers := backends(t, ns, "server", 2)
	createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	backends(t, ns, "fetcher", 1)
	createService(t, ns, lbService("fetcher", 80))
	waitLBAddress(t, ns, "fetcher")
	url := knetServiceURL(t, ns, "fetcher") + "/dial?request=hostname&protocol=http&host=server&port=80&tries=1"
	eventually(t, 20*time.Second, func() error {
		body, err := httpGet(url)
		if err != nil {
			return err
		}
		for _, s := range servers {
			if strings.Contains(body, s.Name) {
				return nil
			}
		}
		return errorf("fetcher answered %q, want a server pod's name", body)
	})
}
