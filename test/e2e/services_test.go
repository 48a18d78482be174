package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// backends runs a Deployment of n netexec pods labelled app=<name> and waits until all are Ready.
func backends(t *testing.T, ns, name string, n int32) []corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": name}
	pod := netexecPod("", labels)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitReplicas(t, ns, name, n)
}

func waitReplicas(t *testing.T, ns, name string, n int32) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				pods = append(pods, p)
			}
		}
		return int32(len(pods)) == n && int32(len(list.Items)) == n, nil
	})
	if err != nil {
		out, _ := kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
		t.Fatalf("%s: want %d ready pods: %v\n%s", name, n, err, out)
	}
	return pods
}

func createService(t *testing.T, ns string, svc *corev1.Service) *corev1.Service {
	t.Helper()
	s, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hostnames asks url n times from inside pod and counts the answering backends.
func hostnames(t *testing.T, ns, pod, url string, n int) map[string]int {
	t.Helper()
	script := fmt.Sprintf("for i in $(seq %d); do curl -s --max-time 2 %s; echo; done", n, url)
	out, err := execIn(t, ns, pod, "sh", "-c", script)
	if err != nil {
		t.Fatalf("requests to %s from %s: %v", url, pod, err)
	}
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		seen[strings.TrimSpace(l)]++
	}
	return seen
}

func TestClusterIPNamedTargetPortSpreadsOverBackends(t *testing.T) {
	ns := testNamespace(t)
	pods := backends(t, ns, "web", 3)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	})
	from := pods[0].Name
	url := fmt.Sprintf("http://%s/hostname", svc.Spec.ClusterIP)
	var seen map[string]int
	eventually(t, 20*time.Second, func() error {
		seen = hostnames(t, ns, from, url, 30)
		if len(seen) != 3 {
			return errorf("30 requests reached %v, want all 3 backends", seen)
		}
		return nil
	})
	for _, p := range pods {
		if seen[p.Name] == 0 {
			t.Errorf("backend %s never answered: %v", p.Name, seen)
		}
	}
	// Scaling 3 → 1 moves all traffic to the remaining pod within seconds.
	scale, _ := client.AppsV1().Deployments(ns).GetScale(context.Background(), "web", metav1.GetOptions{})
	scale.Spec.Replicas = 1
	if _, err := client.AppsV1().Deployments(ns).UpdateScale(context.Background(), "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	left := waitReplicas(t, ns, "web", 1)[0].Name
	clientPod := left
	eventually(t, 10*time.Second, func() error {
		seen := hostnames(t, ns, clientPod, url, 10)
		if len(seen) != 1 || seen[left] != 10 {
			return errorf("after scaling to 1, answers %v, want only %s", seen, left)
		}
		return nil
	})
}

func TestNodePortAnswersOnEveryNodeFromHost(t *testing.T) {
	ns := testNamespace(t)
	backends(t, ns, "np", 2)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "np"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "np"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	port := svc.Spec.Ports[0].NodePort
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, ip := range nodeIPs(t) {
		url := fmt.Sprintf("http://%s:%d/hostname", ip, port)
		eventually(t, 15*time.Second, func() error {
			resp, err := hc.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.HasPrefix(string(b), "np-") {
				return errorf("%s answered %q", url, b)
			}
			return nil
		})
	}
}

func TestSessionAffinityClientIPSticks(t *testing.T) {
	ns := testNamespace(t)
	pods := backends(t, ns, "sticky", 3)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "sticky"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "sticky"}, SessionAffinity: corev1.ServiceAffinityClientIP,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	url := fmt.Sprintf("http://%s/hostname", svc.Spec.ClusterIP)
	eventually(t, 15*time.Second, func() error {
		seen := hostnames(t, ns, pods[0].Name, url, 20)
		if len(seen) != 1 {
			return errorf("ClientIP affinity spread 20 requests over %v", seen)
		}
		return nil
	})
}

func TestUDPFlowRecoversAfterEndpointDeleted(t *testing.T) {
	ns := testNamespace(t)
	pods := backends(t, ns, "udp", 1)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "udp"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "udp"},
			Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(8081)}}},
	})
	// A client pod sends from one fixed source port, so every datagram is the same conntrack flow.
	cl := netexecPod("udpclient", nil)
	createPod(t, ns, cl)
	waitPodReady(t, ns, "udpclient")
	// Every datagram leaves from source port 40000: one conntrack flow, as a long-lived UDP
	// client (a DNS resolver library) makes.
	ask := func() (string, error) {
		out, err := execIn(t, ns, "udpclient", "sh", "-c", fmt.Sprintf("echo hostname | socat -t1 - UDP4:%s:53,sourceport=40000,reuseaddr", svc.Spec.ClusterIP))
		return strings.TrimSpace(out), err
	}
	eventually(t, 15*time.Second, func() error {
		out, err := ask()
		if err != nil || out != pods[0].Name {
			return errorf("UDP answer %q (%v), want %s", out, err, pods[0].Name)
		}
		return nil
	})
	old := pods[0].Name
	if err := client.CoreV1().Pods(ns).Delete(context.Background(), old, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, ns, "udp", 1)
	// netexec's UDP server answers "hostname" with its name; the flow must reach the new pod.
	eventually(t, 15*time.Second, func() error {
		out, err := ask()
		if err != nil || !strings.HasPrefix(out, "udp-") || out == old {
			return errorf("UDP answer %q (%v), want the new backend", out, err)
		}
		return nil
	})
}

func TestExternalTrafficPolicyLocalPreservesClientIP(t *testing.T) {
	ns := testNamespace(t)
	pods := backends(t, ns, "local", 1)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "local"},
		// LoadBalancer, because only it gets a healthCheckNodePort; the test uses its NodePort.
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector: map[string]string{"app": "local"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	node, err := client.CoreV1().Nodes().Get(context.Background(), pods[0].Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := internalIP(node)
	url := fmt.Sprintf("http://%s:%d/clientip", nodeIP, svc.Spec.Ports[0].NodePort)
	hc := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 15*time.Second, func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		host, _, _ := net.SplitHostPort(string(b))
		if host != gatewayIP(nodeIP) {
			return errorf("backend saw client %q, want the host's underlay address %s (client IP preserved)", b, gatewayIP(nodeIP))
		}
		return nil
	})
	if svc.Spec.HealthCheckNodePort == 0 {
		t.Fatal("no healthCheckNodePort allocated")
	}
	// A load balancer polls this; it answers 200 once the proxy counted the local endpoint.
	eventually(t, 5*time.Second, func() error {
		resp, err := hc.Get(fmt.Sprintf("http://%s:%d/", nodeIP, svc.Spec.HealthCheckNodePort))
		if err != nil {
			return fmt.Errorf("healthCheckNodePort: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return errorf("healthCheckNodePort on the node with the endpoint = %d, want 200", resp.StatusCode)
		}
		return nil
	})
}

func nodeIPs(t *testing.T) []string {
	t.Helper()
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for i := range nodes.Items {
		ips = append(ips, internalIP(&nodes.Items[i]))
	}
	return ips
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// gatewayIP is the host's address on the underlay (.1 of the node's network).
func gatewayIP(nodeIP string) string {
	ip := net.ParseIP(nodeIP).To4()
	mask := net.CIDRMask(16, 32)
	if !strings.HasPrefix(nodeIP, "172.18.") {
		mask = net.CIDRMask(24, 32)
	}
	gw := ip.Mask(mask)
	gw[3] = 1
	return gw.String()
}
