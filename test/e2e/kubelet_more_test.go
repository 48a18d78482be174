package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestInitContainersRunInOrderBeforeMain: init containers run one after the other, each to
// completion, before the main container starts; their statuses say Completed.
func TestInitContainersRunInOrderBeforeMain(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("inits", "cp /work/order /work/seen-by-main; sleep 3600")
	p.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	mount := []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	p.Spec.Containers[0].VolumeMounts = mount
	p.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: "debian:bookworm", Command: []string{"/bin/sh", "-c", "sleep 1; echo first >> /work/order"}, VolumeMounts: mount},
		{Name: "second", Image: "debian:bookworm", Command: []string{"/bin/sh", "-c", "echo second >> /work/order"}, VolumeMounts: mount},
	}
	createPod(t, ns, p)
	pod := waitPod(t, ns, "inits", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	eventually(t, 10*time.Second, func() error {
		out, err := execIn(t, ns, "inits", "cat", "/work/seen-by-main")
		if err != nil || out != "first\nsecond\n" {
			return errorf("main container saw %q (%v), want both init containers' lines in order", out, err)
		}
		return nil
	})
	if len(pod.Status.InitContainerStatuses) != 2 {
		t.Fatalf("initContainerStatuses: %+v", pod.Status.InitContainerStatuses)
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 || s.State.Terminated.Reason != "Completed" {
			t.Errorf("init container %s: state %+v, want Terminated/Completed with exit 0", s.Name, s.State)
		}
	}
}

// TestDNSPolicyDefaultAndHostNet: Default gives the node's resolv.conf; a hostNetwork pod gets
// the cluster DNS only with ClusterFirstWithHostNet (with ClusterFirst it falls back to Default,
// as the kubelet does).
func TestDNSPolicyDefaultAndHostNet(t *testing.T) {
	ns := testNamespace(t)
	cases := []struct {
		name        string
		policy      corev1.DNSPolicy
		hostNetwork bool
		clusterDNS  bool
	}{
		{"default", corev1.DNSDefault, false, false},
		{"hostnet-cf", corev1.DNSClusterFirst, true, false},
		{"hostnet-cfwhn", corev1.DNSClusterFirstWithHostNet, true, true},
	}
	for _, c := range cases {
		p := shellPod(c.name, "sleep 3600")
		p.Spec.DNSPolicy, p.Spec.HostNetwork = c.policy, c.hostNetwork
		createPod(t, ns, p)
	}
	for _, c := range cases {
		waitPod(t, ns, c.name, 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		resolv := mustExec(t, ns, c.name, "cat", "/etc/resolv.conf")
		has := strings.Contains(resolv, "nameserver 10.96.0.10") && strings.Contains(resolv, "search "+ns+".svc.cluster.local svc.cluster.local cluster.local")
		if has != c.clusterDNS {
			t.Errorf("%s (dnsPolicy %s, hostNetwork %v): cluster DNS in resolv.conf = %v, want %v:\n%s", c.name, c.policy, c.hostNetwork, has, c.clusterDNS, resolv)
		}
		if !c.clusterDNS && strings.Contains(resolv, "cluster.local") {
			t.Errorf("%s: resolv.conf mentions the cluster domain:\n%s", c.name, resolv)
		}
	}
}

// TestDownwardAPIVolume: labels, annotations, the pod name and a resource limit as files; a label
// change reaches the file.
func TestDownwardAPIVolume(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("downward", "sleep 3600")
	p.Labels = map[string]string{"tier": "web", "zone": "a"}
	p.Annotations = map[string]string{"owner": "team-x"}
	p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}
	p.Spec.Volumes = []corev1.Volume{{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
		{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
		{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
		{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
		{Path: "cpu_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "sh", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
	}}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "info", MountPath: "/etc/podinfo"}}
	createPod(t, ns, p)
	waitPod(t, ns, "downward", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	for file, want := range map[string]string{
		"labels":      "tier=\"web\"\nzone=\"a\"",
		"annotations": "owner=\"team-x\"",
		"name":        "downward",
		"cpu_limit":   "250",
	} {
		if got := mustExec(t, ns, "downward", "cat", "/etc/podinfo/"+file); strings.TrimSpace(got) != want {
			t.Errorf("/etc/podinfo/%s = %q, want %q", file, got, want)
		}
	}
	ctx := context.Background()
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "downward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels["zone"] = "b"
	if _, err := client.CoreV1().Pods(ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		if out, _ := execIn(t, ns, "downward", "cat", "/etc/podinfo/labels"); !strings.Contains(out, "zone=\"b\"") {
			return errorf("labels file still %q after the label changed", out)
		}
		return nil
	})
}

// TestAttachSendsStdinAndStreamsOutput: `kubectl attach -i` feeds the container's stdin and shows
// what it writes; with stdinOnce the container sees EOF when the client detaches.
func TestAttachSendsStdinAndStreamsOutput(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("attach", "while read line; do echo got:$line; done; echo stdin-closed")
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	p.Spec.Containers[0].Stdin, p.Spec.Containers[0].StdinOnce = true, true
	createPod(t, ns, p)
	waitPod(t, ns, "attach", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, knetBin, "kubectl", "--kubeconfig", kubeconfig, "attach", "-i", "-n", ns, "attach", "-c", "sh")
	cmd.Stdin = strings.NewReader("hello\nthere\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl attach -i: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"got:hello", "got:there"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("attach output lacks %q:\n%s", want, stdout.String())
		}
	}
	pod := waitPod(t, ns, "attach", 30*time.Second, "Succeeded after stdin closed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	logs := mustKubectl(t, "logs", "-n", ns, "attach")
	if !strings.Contains(logs, "got:hello") || !strings.Contains(logs, "stdin-closed") {
		t.Errorf("container log after attach = %q (pod %s)", logs, podSummary(pod))
	}
}

// TestHostPortsShareAPortByHostIP: two pods on one node use the same hostPort, one on the node's
// address and one on 127.0.0.1; the host reaches the first on the node IP, and a hostNetwork pod
// on that node reaches the second on its loopback.
func TestHostPortsShareAPortByHostIP(t *testing.T) {
	ns := testNamespace(t)
	nodes, err := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v", err)
	}
	node := nodes.Items[0]
	var nodeIP string
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			nodeIP = a.Address
		}
	}
	for name, hostIP := range map[string]string{"on-node-ip": nodeIP, "on-loopback": "127.0.0.1"} {
		p := netexecPod(name, nil)
		p.Spec.NodeName = node.Name
		p.Spec.Containers[0].Ports[0].HostPort = 18300
		p.Spec.Containers[0].Ports[0].HostIP = hostIP
		createPod(t, ns, p)
	}
	waitPodReady(t, ns, "on-node-ip")
	waitPodReady(t, ns, "on-loopback")
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get("http://" + nodeIP + ":18300/hostname")
	if err != nil {
		t.Fatalf("host -> %s:18300: %v", nodeIP, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "on-node-ip" {
		t.Errorf("host -> %s:18300 answered %q, want on-node-ip", nodeIP, b)
	}
	hn := shellPod("hostnet", "sleep 3600")
	hn.Spec.HostNetwork, hn.Spec.NodeName = true, node.Name
	createPod(t, ns, hn)
	waitPod(t, ns, "hostnet", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if out := mustExec(t, ns, "hostnet", "curl", "-s", "--max-time", "3", "http://127.0.0.1:18300/hostname"); out != "on-loopback" {
		t.Errorf("node -> 127.0.0.1:18300 answered %q, want on-loopback", out)
	}
}

// TestKubeletRestoresPodStatusChangedByOthers: the node lifecycle controller marks pods of a node
// that missed heartbeats Ready=False; when the node is back the kubelet must put its own status
// back, or the pods stay out of their Services. Simulated by writing Ready=False as that
// controller does.
func TestKubeletRestoresPodStatusChangedByOthers(t *testing.T) {
	ns := testNamespace(t)
	createPod(t, ns, netexecPod("marked", nil))
	waitPodReady(t, ns, "marked")
	ctx := context.Background()
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "marked", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			pod.Status.Conditions[i].Status, pod.Status.Conditions[i].Reason = corev1.ConditionFalse, "NodeNotReady"
			pod.Status.Conditions[i].LastTransitionTime = metav1.Now()
		}
	}
	if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p, _ := client.CoreV1().Pods(ns).Get(ctx, "marked", metav1.GetOptions{}); podReady(p) {
		t.Fatal("the simulated node controller's write did not take")
	}
	waitPod(t, ns, "marked", 30*time.Second, "Ready again (the kubelet's own status)", podReady)
}

// TestPodStartsOnceItsConfigMapExists: a container whose environment refers to a ConfigMap
// that does not exist yet waits in CreateContainerConfigError, and starts with the value once
// the ConfigMap is created, as the kubelet retries a failed pod sync.
func TestPodStartsOnceItsConfigMapExists(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("late-config", `echo "greeting=$GREETING"; sleep 3600`)
	p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}, Key: "greeting"},
	}}}
	createPod(t, ns, p)
	waitPod(t, ns, "late-config", 60*time.Second, "CreateContainerConfigError", func(p *corev1.Pod) bool {
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Waiting != nil && s.State.Waiting.Reason == "CreateContainerConfigError" &&
				strings.Contains(s.State.Waiting.Message, "later") {
				return true
			}
		}
		return false
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later"}, Data: map[string]string{"greeting": "hello"}}
	if _, err := client.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "late-config", 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if out := mustExec(t, ns, "late-config", "sh", "-c", "echo $GREETING"); strings.TrimSpace(out) != "hello" {
		t.Errorf("GREETING = %q, want hello", out)
	}
}
