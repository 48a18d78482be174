package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

type fakeEnvSources struct {
	cms      map[string]*corev1.ConfigMap
	secrets  map[string]*corev1.Secret
	services map[string][]*corev1.Service
}

func (f fakeEnvSources) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("configmaps"), name)
}

func (f fakeEnvSources) Secret(ns, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func (f fakeEnvSources) Services(ns string) ([]*corev1.Service, error) { return f.services[ns], nil }
func (f fakeEnvSources) KubernetesServiceKnown() bool                  { return true }

func TestResolveEnv(t *testing.T) {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	svc := func(ns, name, ip string, port int32) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{{Port: port, Protocol: corev1.ProtocolTCP}}}}
	}
	src := fakeEnvSources{
		cms:     map[string]*corev1.ConfigMap{"web/cfg": {Data: map[string]string{"mode": "fast", "LEVEL": "3", "bad-key": "x"}}},
		secrets: map[string]*corev1.Secret{"web/sec": {Data: map[string][]byte{"password": []byte("s3cret")}}},
		services: map[string][]*corev1.Service{
			"web":     {svc("web", "backend", "10.96.0.20", 80), svc("web", "headless", "None", 80)},
			"default": {svc("default", "kubernetes", "10.96.0.1", 443), svc("default", "other", "10.96.0.30", 80)},
		},
	}
	c := &corev1.Container{
		Name: "c",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Optional: ptr.To(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "POD_IP", ValueFrom: field("status.podIP")},
			{Name: "POD_IPS", ValueFrom: field("status.podIPs")},
			{Name: "HOST_IP", ValueFrom: field("status.hostIP")},
			{Name: "NAME", ValueFrom: field("metadata.name")},
			{Name: "NODE", ValueFrom: field("spec.nodeName")},
			{Name: "URL", Value: "http://$(POD_IP):8080/$(CFG_mode)/$(BACKEND_SERVICE_HOST)"},
			{Name: "ESCAPED", Value: "$$(POD_IP)"},
			{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
			{Name: "CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
		},
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "web-0"}, Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{*c}}}
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
	env, err := resolveEnv(envInputs{Pod: pod, Container: c, PodIPs: []string{"10.244.1.7", "fd00::7"}, HostIPs: []string{"172.18.0.3"}, Allocatable: alloc}, src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"POD_IP": "10.244.1.7", "POD_IPS": "10.244.1.7,fd00::7", "HOST_IP": "172.18.0.3", "NAME": "web-0", "NODE": "node1",
		"URL": "http://10.244.1.7:8080/fast/10.96.0.20", "ESCAPED": "$(POD_IP)", "PASSWORD": "s3cret",
		"CPU_LIMIT": "4", "MEM_LIMIT": "67108864", "CFG_mode": "fast", "CFG_LEVEL": "3", "CFG_bad-key": "x", // relaxed env var names are GA in v1.35
		"BACKEND_SERVICE_HOST": "10.96.0.20", "BACKEND_SERVICE_PORT": "80", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
		"KUBERNETES_SERVICE_PORT": "443",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for _, absent := range []string{"HEADLESS_SERVICE_HOST", "OTHER_SERVICE_HOST"} {
		if _, ok := env[absent]; ok {
			t.Errorf("%s is set: %v", absent, env)
		}
	}
	// enableServiceLinks=false keeps only the master Service.
	pod.Spec.EnableServiceLinks = ptr.To(false)
	env, _ = resolveEnv(envInputs{Pod: pod, Container: &corev1.Container{}}, src)
	if _, ok := env["BACKEND_SERVICE_HOST"]; ok || env["KUBERNETES_SERVICE_HOST"] != "10.96.0.1" {
		t.Errorf("enableServiceLinks=false env = %v", env)
	}
	// A missing non-optional key is an error that names it.
	c2 := &corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nope"}}}}}
	if _, err := resolveEnv(envInputs{Pod: pod, Container: c2}, src); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing key: err = %v", err)
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
