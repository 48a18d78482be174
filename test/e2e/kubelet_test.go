package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

func TestNodesReady(t *testing.T) {
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 2 {
		t.Fatalf("got %d nodes, want 2", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		if n.Spec.PodCIDR == "" {
			t.Errorf("node %s has no podCIDR", n.Name)
		}
		if n.Labels["kubernetes.io/hostname"] != n.Name {
			t.Errorf("node %s label kubernetes.io/hostname = %q", n.Name, n.Labels["kubernetes.io/hostname"])
		}
		var internal string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = a.Address
			}
		}
		if !strings.HasPrefix(internal, "172.") {
			t.Errorf("node %s InternalIP = %q, want an underlay address", n.Name, internal)
		}
	}
	v, err := client.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v1.35.4" {
		t.Errorf("API server version = %v (%v), want v1.35.4", v, err)
	}
}

func TestDeploymentExecLogsHostnameReplace(t *testing.T) {
	ns := testNamespace(t)
	labels := map[string]string{"app": "netexec"}
	pod := netexecPod("", labels)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "netexec"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "netexec", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 2, nil
	})
	if err != nil {
		out, _ := kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
		t.Fatalf("deployment not ready: %v\n%s", err, out)
	}
	pods, _ := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=netexec"})
	first := pods.Items[0]
	if got := strings.TrimSpace(mustExec(t, ns, first.Name, "hostname")); got != first.Name {
		t.Errorf("hostname in pod = %q, want the pod name %q", got, first.Name)
	}
	// netexec logs its start-up; kubectl logs goes API server → kubelet → log file.
	eventually(t, 10*time.Second, func() error {
		out, err := kubectl(t, "logs", "-n", ns, first.Name)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "8080") {
			return errorf("logs do not mention the http port: %q", out)
		}
		return nil
	})
	// A deleted pod is replaced by the Deployment and the new one becomes Ready.
	if err := client.CoreV1().Pods(ns).Delete(ctx, first.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=netexec"})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, p := range list.Items {
			if p.Name == first.Name {
				return false, nil
			}
			if podReady(&p) {
				ready++
			}
		}
		return ready == 2, nil
	})
	if err != nil {
		out, _ := kubectl(t, "get", "pods", "-n", ns, "-o", "wide")
		t.Fatalf("deleted pod not replaced: %v\n%s", err, out)
	}
}

func TestPodFilesAndDNSConfig(t *testing.T) {
	ns := testNamespace(t)
	p := netexecPod("files", nil)
	p.Spec.Hostname = "myhost"
	p.Spec.Subdomain = "sub"
	p.Spec.HostAliases = []corev1.HostAlias{{IP: "10.1.2.3", Hostnames: []string{"alias.example"}}}
	createPod(t, ns, p)
	pod := waitPodReady(t, ns, "files")
	resolv := mustExec(t, ns, "files", "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver 10.96.0.10", "search " + ns + ".svc.cluster.local svc.cluster.local cluster.local", "ndots:5"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	hosts := mustExec(t, ns, "files", "cat", "/etc/hosts")
	for _, want := range []string{pod.Status.PodIP + "\tmyhost.sub." + ns + ".svc.cluster.local\tmyhost", "alias.example", "localhost"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, hosts)
		}
	}
	if got := strings.TrimSpace(mustExec(t, ns, "files", "hostname")); got != "myhost" {
		t.Errorf("hostname = %q, want myhost", got)
	}
	// The pod's files are its own: the host's /etc/hosts is untouched.
	mustExec(t, ns, "files", "sh", "-c", "echo written-in-pod > /tmp/knet-e2e-marker")
	if out := mustExec(t, ns, "files", "cat", "/tmp/knet-e2e-marker"); !strings.Contains(out, "written-in-pod") {
		t.Errorf("pod cannot read its own /tmp file: %q", out)
	}
	if fileExists("/tmp/knet-e2e-marker") {
		t.Error("a file written in the pod's /tmp appeared on the host")
	}

	none := netexecPod("dnsnone", nil)
	none.Spec.DNSPolicy = corev1.DNSNone
	none.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.96.0.53"}, Searches: []string{"example.test"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptr.To("2")}}}
	createPod(t, ns, none)
	waitPodReady(t, ns, "dnsnone")
	resolv = mustExec(t, ns, "dnsnone", "cat", "/etc/resolv.conf")
	for _, want := range []string{"nameserver 10.96.0.53", "search example.test", "ndots:2"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("dnsPolicy None resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	if strings.Contains(resolv, "10.96.0.10") {
		t.Errorf("dnsPolicy None resolv.conf has the cluster DNS:\n%s", resolv)
	}
}

func TestEnvServiceLinksAndDownwardAPI(t *testing.T) {
	ns := testNamespace(t)
	ctx := context.Background()
	_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := netexecPod("env", map[string]string{"tier": "web"})
	p.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "MY_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "MY_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		{Name: "MY_NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "PLAIN", Value: "hello $(MY_POD_NAME)"},
	}
	createPod(t, ns, p)
	pod := waitPodReady(t, ns, "env")
	env := mustExec(t, ns, "env", "env")
	for _, want := range []string{
		"MY_POD_NAME=env", "MY_POD_IP=" + pod.Status.PodIP, "MY_NODE=" + pod.Spec.NodeName, "PLAIN=hello env",
		"BACKEND_SERVICE_HOST=", "BACKEND_SERVICE_PORT=80", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
	} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
}

// TestNodeProcessRestartBringsPodsBack kills a node process (as a crash would): the daemon
// restarts it and the node's pods come back Ready and reachable.
func TestNodeProcessRestartBringsPodsBack(t *testing.T) {
	ns := testNamespace(t)
	node := clusterName + "-node1"
	p := netexecPod("survivor", nil)
	p.Spec.NodeName = node
	createPod(t, ns, p)
	waitPodReady(t, ns, "survivor")
	pidFile := filepath.Join("/var/lib/knet", clusterName, "nodes", node, "node.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill node process %d: %v", pid, err)
	}
	eventually(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(pidFile)
		if strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
			return errorf("node process not restarted yet")
		}
		return nil
	})
	var pod *corev1.Pod
	eventually(t, 60*time.Second, func() error {
		pod, err = client.CoreV1().Pods(ns).Get(context.Background(), "survivor", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !podReady(pod) {
			return errorf("pod not Ready again: %s", podSummary(pod))
		}
		out, err := httpGet("http://" + pod.Status.PodIP + ":8080/hostname")
		if err != nil || out != "survivor" {
			return errorf("pod at %s answered %q (%v)", pod.Status.PodIP, out, err)
		}
		return nil
	})
}
