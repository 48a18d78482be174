package ingress

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

func testConfig(client *fake.Clientset) Config {
	return Config{
		Client: client, HTTPListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", HealthListen: "127.0.0.1:0",
		PublishService: "kube-system/knet-ingress", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"no client":       func(c *Config) { c.Client = nil },
		"bad listen":      func(c *Config) { c.HTTPListen = "80" },
		"bad publish":     func(c *Config) { c.PublishService = "knet-ingress" },
		"tiny header max": func(c *Config) { c.MaxHeaderBytes = 10 },
	} {
		cfg := testConfig(fake.NewClientset())
		cfg.Defaults()
		mut(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted an invalid config", name)
		}
	}
	cfg := Config{Client: fake.NewClientset()}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil || cfg.HTTPListen != ":80" || cfg.ClassName != "knet" {
		t.Errorf("defaults: %v %+v", err, cfg)
	}
}

// TestSyncPublishesStatusAndWarns runs syncs against a fake API: served
// Ingresses get the publish Service's address, others are left alone, an
// invalid one gets a Warning event once, and a second sync writes nothing.
func TestSyncPublishesStatusAndWarns(t *testing.T) {
	P := networkingv1.PathTypePrefix
	lb := newService("kube-system", "knet-ingress", 80)
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.18.255.1"}}
	served := newIngress("a", "served", 0, httpRule("a.example", ingPath("/", P, "web", 80)))
	invalid := newIngress("a", "invalid", 1, httpRule("b.example", ingPath("/", P, "missing", 80)))
	nginx := "nginx"
	foreign := newIngress("a", "foreign", 2, httpRule("c.example", ingPath("/", P, "web", 80)))
	foreign.Spec.IngressClassName = &nginx
	objs := []runtime.Object{lb, served, invalid, foreign, newService("a", "web", 80), knetClass(true)}
	client := fake.NewClientset(objs...)
	c, err := New(testConfig(client))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.httpLn.Close(); c.httpsLn.Close(); c.healthLn.Close() })
	rec := record.NewFakeRecorder(10)
	b := &builder{className: "knet", controllerName: "knet.dev/ingress", pools: c.pools, loadCert: c.certs.load}
	ctx := context.Background()

	snapshotFromAPI := func() snapshot {
		ings, _ := client.NetworkingV1().Ingresses("").List(ctx, metav1.ListOptions{})
		svcs, _ := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		var ip []*networkingv1.Ingress
		for i := range ings.Items {
			ip = append(ip, &ings.Items[i])
		}
		var sp []*corev1.Service
		for i := range svcs.Items {
			sp = append(sp, &svcs.Items[i])
		}
		return newSnapshot(ip, []*networkingv1.IngressClass{knetClass(true)}, sp, []*discoveryv1.EndpointSlice{}, nil)
	}
	if err := c.sync(ctx, b, snapshotFromAPI(), rec); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for name, want := range map[string]string{"served": "172.18.255.1", "invalid": "172.18.255.1", "foreign": ""} {
		ing, err := client.NetworkingV1().Ingresses("a").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if len(ing.Status.LoadBalancer.Ingress) > 0 {
			got = ing.Status.LoadBalancer.Ingress[0].IP
		}
		if got != want {
			t.Errorf("Ingress a/%s status IP = %q, want %q", name, got, want)
		}
	}
	if n := len(rec.Events); n != 1 {
		t.Fatalf("got %d events, want 1 (ServiceNotFound)", n)
	}
	if ev := <-rec.Events; !strings.HasPrefix(ev, "Warning ServiceNotFound") || !strings.Contains(ev, "a/missing") {
		t.Errorf("event %q, want a Warning ServiceNotFound naming a/missing", ev)
	}

	// A second sync with no change writes nothing and repeats no event.
	client.ClearActions()
	if err := c.sync(ctx, b, snapshotFromAPI(), rec); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "list" && a.GetVerb() != "get" {
			t.Errorf("second sync made a write: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	if n := len(rec.Events); n != 0 {
		t.Errorf("second sync emitted %d events, want 0", n)
	}

	// The address changes: every served Ingress follows.
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.18.255.7"}, {Hostname: "lb.example"}}
	if _, err := client.CoreV1().Services("kube-system").UpdateStatus(ctx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.sync(ctx, b, snapshotFromAPI(), rec); err != nil {
		t.Fatalf("third sync: %v", err)
	}
	ing, _ := client.NetworkingV1().Ingresses("a").Get(ctx, "served", metav1.GetOptions{})
	if got := ing.Status.LoadBalancer.Ingress; len(got) != 2 || got[0].IP != "172.18.255.7" || got[1].Hostname != "lb.example" {
		t.Errorf("status after address change = %+v", got)
	}
}
