package dns

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

// TestManifest decodes deploy/dns.yaml strictly into the API types and
// checks what users and the kubelet rely on.
func TestManifest(t *testing.T) {
	data, err := os.ReadFile("../../deploy/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	var svc *v1.Service
	var role *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		var obj any
		switch meta.Kind {
		case "Deployment":
			dep = &appsv1.Deployment{}
			obj = dep
		case "Service":
			svc = &v1.Service{}
			obj = svc
		case "ClusterRole":
			role = &rbacv1.ClusterRole{}
			obj = role
		case "ServiceAccount":
			obj = &v1.ServiceAccount{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		default:
			t.Fatalf("unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
	if dep == nil || svc == nil || role == nil {
		t.Fatal("manifest lacks the Deployment, Service or ClusterRole")
	}
	if svc.Namespace != "kube-system" || svc.Name != "kube-dns" || svc.Spec.ClusterIP != "10.96.0.10" || svc.Labels["k8s-app"] != "kube-dns" {
		t.Errorf("Service = %s/%s %s labels %v, want kube-system/kube-dns 10.96.0.10 k8s-app=kube-dns", svc.Namespace, svc.Name, svc.Spec.ClusterIP, svc.Labels)
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Name+"/"+string(p.Protocol))
	}
	if !slices.Equal(ports, []string{"dns/UDP", "dns-tcp/TCP"}) {
		t.Errorf("Service ports = %v", ports)
	}
	pod := dep.Spec.Template
	if dep.Namespace != "kube-system" || dep.Name != "knet-dns" || *dep.Spec.Replicas != 2 || pod.Labels["k8s-app"] != "kube-dns" ||
		svc.Spec.Selector["k8s-app"] != "kube-dns" || pod.Spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("Deployment %s/%s replicas %d labels %v priority %q", dep.Namespace, dep.Name, *dep.Spec.Replicas, pod.Labels, pod.Spec.PriorityClassName)
	}
	c := pod.Spec.Containers[0]
	if !strings.HasSuffix(strings.Split(c.Image, ":")[0], "/knet") || c.Command[0] != "/knet" || c.Command[1] != "dns" {
		t.Errorf("container image %q command %v, want image knet running /knet dns", c.Image, c.Command)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes %q %q", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	if !slices.Contains(c.Command, "--health-listen=:8080") || !slices.Contains(c.Command, "--listen=:53") {
		t.Errorf("command %v does not listen where the probes and Service point", c.Command)
	}
	// `knet dns` and the knet-dns binary it execs share one flag set: the
	// manifest's arguments must parse there and give a valid Config.
	var cl CommandLine
	fs := pflag.NewFlagSet("knet-dns", pflag.ContinueOnError)
	cl.AddFlags(fs)
	if err := fs.Parse(c.Command[2:]); err != nil {
		t.Errorf("knet-dns does not take the manifest's arguments %v: %v", c.Command[2:], err)
	}
	cl.Config.Source = fakeSource(fake.NewClientset())
	cl.Config.Defaults()
	if err := cl.Config.Validate(); err != nil {
		t.Errorf("the manifest's arguments give an invalid config: %v", err)
	}
	var resources []string
	for _, r := range role.Rules {
		if slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
			resources = append(resources, r.Resources...)
		}
	}
	for _, want := range []string{"namespaces", "services", "endpointslices"} {
		if !slices.Contains(resources, want) {
			t.Errorf("ClusterRole lets list/watch %v, want namespaces, services and endpointslices (the informers the server starts)", resources)
		}
	}
}
