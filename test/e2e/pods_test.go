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
)

func TestMultiContainerVolumes(t *testing.T) {
	ns := testNamespace(t)
	ctx := context.Background()
	_, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hello from configmap"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"}, StringData: map[string]string{"password": "s3cret"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := netexecPod("multi", nil)
	p.Spec.Volumes = []corev1.Volume{
		{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
	}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}, {Name: "cfg", MountPath: "/etc/cfg"}, {Name: "sec", MountPath: "/etc/sec", ReadOnly: true}}
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
		Name: "writer", Image: "debian:bookworm",
		Command:      []string{"/bin/sh", "-c", "echo from-writer > /data/file; sleep 3600"},
		VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/data"}},
	})
	createPod(t, ns, p)
	waitPodReady(t, ns, "multi")
	eventually(t, 10*time.Second, func() error {
		out, err := execIn(t, ns, "multi", "cat", "/shared/file")
		if err != nil || !strings.Contains(out, "from-writer") {
			return errorf("emptyDir not shared: %q %v", out, err)
		}
		return nil
	})
	if out := mustExec(t, ns, "multi", "cat", "/etc/cfg/greeting"); out != "hello from configmap" {
		t.Errorf("configMap volume = %q", out)
	}
	if out := mustExec(t, ns, "multi", "cat", "/etc/sec/password"); out != "s3cret" {
		t.Errorf("secret volume = %q", out)
	}
	if _, err := execIn(t, ns, "multi", "sh", "-c", "echo x > /etc/sec/new"); err == nil {
		t.Error("read-only secret mount is writable")
	}
	// Containers of a pod share its network: the writer reaches netexec on localhost.
	out, err := kubectl(t, "exec", "-n", ns, "multi", "-c", "writer", "--", "curl", "-s", "http://localhost:8080/hostname")
	if err != nil || strings.TrimSpace(out) != "multi" {
		t.Errorf("localhost between containers: %q %v", out, err)
	}
	// The service-account token lets a pod reach the API through the kubernetes Service later;
	// here: the projected files exist with the pod's namespace.
	if out := mustExec(t, ns, "multi", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"); out != ns {
		t.Errorf("serviceaccount namespace file = %q, want %q", out, ns)
	}
	// A ConfigMap change reaches the mounted file.
	cm, _ := client.CoreV1().ConfigMaps(ns).Get(ctx, "cfg", metav1.GetOptions{})
	cm.Data["greeting"] = "updated"
	if _, err := client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		if out, _ := execIn(t, ns, "multi", "cat", "/etc/cfg/greeting"); out != "updated" {
			return errorf("configMap volume still %q", out)
		}
		return nil
	})
}

func TestHostNetworkPod(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("hostnet", "sleep 3600")
	p.Spec.HostNetwork = true
	createPod(t, ns, p)
	pod := waitPod(t, ns, "hostnet", 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if pod.Status.PodIP != pod.Status.HostIP || pod.Status.PodIP == "" {
		t.Errorf("hostNetwork pod IP %q, host IP %q: want equal", pod.Status.PodIP, pod.Status.HostIP)
	}
	out := mustExec(t, ns, "hostnet", "cat", "/proc/net/dev")
	if !strings.Contains(out, "eth0") || !strings.Contains(out, "knet0") && !strings.Contains(out, "veth") && !strings.Contains(out, "eth0") {
		t.Errorf("hostNetwork pod does not see the node's interfaces: %s", out)
	}
}

func TestPortForward(t *testing.T) {
	ns := testNamespace(t)
	createPod(t, ns, netexecPod("pf", nil))
	waitPodReady(t, ns, "pf")
	cmd := exec.Command(knetBin, "kubectl", "--kubeconfig", kubeconfig, "port-forward", "-n", ns, "pod/pf", "18080:8080")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 256)
	_, _ = stdout.Read(buf) // "Forwarding from 127.0.0.1:18080 -> 8080"
	eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:18080/hostname")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "pf" {
			return fmt.Errorf("port-forward answered %q", b)
		}
		return nil
	})
}
