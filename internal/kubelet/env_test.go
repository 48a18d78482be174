package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestContainerEnv(t *testing.T) {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	orig := &corev1.Container{
		Name: "c",
		Env: []corev1.EnvVar{
			{Name: "POD_IP", ValueFrom: field("status.podIP")},
			{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
			{Name: "HOST_IP", ValueFrom: field("status.hostIP")},
			{Name: "NAME", ValueFrom: field("metadata.name")},
			{Name: "URL", Value: "http://$(POD_IP):8080"},
			{Name: "PLAIN", Value: "x"},
			{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
		},
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
	}
	// What virtual-kubelet passes before the pod has an IP.
	resolved := &corev1.Container{Name: "c", Env: []corev1.EnvVar{
		{Name: "POD_IP", Value: ""}, {Name: "POD_IPS", Value: ""}, {Name: "HOST_IP", Value: ""},
		{Name: "NAME", Value: "web-0"}, {Name: "URL", Value: "http://:8080"}, {Name: "PLAIN", Value: "x"},
		{Name: "KUBERNETES_SERVICE_HOST", Value: "10.96.0.1"},
	}}
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
	env := containerEnv(resolved, orig, []string{"10.244.1.7", "fd00::7"}, []string{"172.18.0.3"}, alloc)
	want := map[string]string{
		"POD_IP": "10.244.1.7", "POD_IPS": "10.244.1.7,fd00::7", "HOST_IP": "172.18.0.3",
		"NAME": "web-0", "URL": "http://10.244.1.7:8080", "PLAIN": "x", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
		"CPU_LIMIT": "4", "MEM_LIMIT": "67108864",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if len(env) != len(want) {
		t.Errorf("env has %d entries, want %d: %v", len(env), len(want), env)
	}
	// Without the original spec, virtual-kubelet's values stand.
	if got := containerEnv(resolved, nil, []string{"10.244.1.7"}, nil, nil)["POD_IP"]; got != "" {
		t.Errorf("POD_IP without orig = %q", got)
	}
}

func TestEnvList(t *testing.T) {
	got := envList(map[string]string{"B": "2", "A": "1"}, "web-0")
	want := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web-0", "A=1", "B=2"}
	if len(got) != len(want) {
		t.Fatalf("envList = %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("envList[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	if got := envList(map[string]string{"PATH": "/bin"}, ""); len(got) != 1 || got[0] != "PATH=/bin" {
		t.Errorf("envList keeps the container's PATH: %q", got)
	}
}
