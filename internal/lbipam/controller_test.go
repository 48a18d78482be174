package lbipam

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	extfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

type controllerEnv struct {
	t      *testing.T
	kube   *fake.Clientset
	dyn    *dynfake.FakeDynamicClient
	ext    *extfake.Clientset
	events chan string
	ctrl   *Controller
}

func startController(t *testing.T, defaultPool []string, objs ...runtime.Object) *controllerEnv {
	t.Helper()
	env := &controllerEnv{
		t:      t,
		kube:   fake.NewClientset(objs...),
		dyn:    dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{PoolResource: "IPAddressPoolList"}),
		ext:    extfake.NewSimpleClientset(), // NewClientset lacks the CRD type in its managed-fields schema
		events: make(chan string, 100),
	}
	c, err := NewController(ControllerConfig{
		Client: env.kube, Dynamic: env.dyn, APIExtensions: env.ext, DefaultPool: defaultPool,
		Recorder: &record.FakeRecorder{Events: env.events}, MinSyncInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.ctrl = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return env
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func (e *controllerEnv) ingress(ns, name string) string {
	s, err := e.kube.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
		return ""
	}
	return s.Status.LoadBalancer.Ingress[0].IP
}

func (e *controllerEnv) waitIngress(ns, name, want string) {
	e.t.Helper()
	eventually(e.t, ns+"/"+name+" ingress "+want, func() bool { return e.ingress(ns, name) == want })
}

// waitEvent waits for an event containing every fragment.
func (e *controllerEnv) waitEvent(fragments ...string) {
	e.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e.events:
			ok := true
			for _, f := range fragments {
				ok = ok && strings.Contains(ev, f)
			}
			if ok {
				return
			}
		case <-timeout:
			e.t.Fatalf("no event with %q", fragments)
		}
	}
}

func (e *controllerEnv) createPool(name string, spec map[string]any) {
	e.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "knet.dev/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	u.SetCreationTimestamp(metav1.Now())
	if _, err := e.dyn.Resource(PoolResource).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func TestControllerAllocatesReportsAndReleases(t *testing.T) {
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	env := startController(t, []string{"172.18.255.192/26"}, ns, lbSvc("a/first", 0))
	ctx := context.Background()

	env.waitIngress("a", "first", "172.18.255.192")
	env.waitEvent("Normal", "IPAllocated", "172.18.255.192", `"default"`)
	if _, err := env.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "ipaddresspools.knet.dev", metav1.GetOptions{}); err != nil {
		t.Fatalf("CRD not installed: %v", err)
	}
	s, _ := env.kube.CoreV1().Services("a").Get(ctx, "first", metav1.GetOptions{})
	if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != v1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode = %v, want VIP (the proxy DNATs on every node)", m)
	}

	// An invalid pool is reported on itself; a valid one with priority serves.
	env.createPool("clash", map[string]any{"addresses": []any{"172.18.255.200-172.18.255.201"}})
	env.waitEvent("Warning", "InvalidPool", `pool "default"`)
	env.createPool("extra", map[string]any{"addresses": []any{"10.9.0.1-10.9.0.2"}, "serviceAllocation": map[string]any{"priority": int64(1)}})
	// Let the controller's own pool informer see "extra" before the next Service arrives
	// (the API having it is not enough: the sync reads the informer).
	eventually(t, "pool informer", func() bool {
		l, err := env.ctrl.pools.List(labels.Everything())
		return err == nil && len(l) == 2
	})
	if _, err := env.kube.CoreV1().Services("a").Create(ctx, lbSvc("a/second", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitIngress("a", "second", "10.9.0.1")
	if got := env.ingress("a", "first"); got != "172.18.255.192" {
		t.Errorf("a new pool moved an existing Service to %s", got)
	}

	// A requested address outside every pool: Warning, stays pending.
	if _, err := env.kube.CoreV1().Services("a").Create(ctx, lbSvc("a/wants", 2, annotate("metallb.universe.tf/loadBalancerIPs", "192.0.2.1")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitEvent("Warning", "LoadBalancerIPNotInPool", "192.0.2.1")
	if got := env.ingress("a", "wants"); got != "" {
		t.Errorf("Service requesting an address outside the pools got %s", got)
	}

	// Type change releases the address, and the next Service may take it.
	s, _ = env.kube.CoreV1().Services("a").Get(ctx, "second", metav1.GetOptions{})
	s.Spec.Type = v1.ServiceTypeClusterIP
	if _, err := env.kube.CoreV1().Services("a").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitIngress("a", "second", "")
	env.waitEvent("Normal", "IPReleased", "10.9.0.1")
	if _, err := env.kube.CoreV1().Services("a").Create(ctx, lbSvc("a/third", 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitIngress("a", "third", "10.9.0.1")

	// Deleting a Service frees its address too.
	if err := env.kube.CoreV1().Services("a").Delete(ctx, "third", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := env.kube.CoreV1().Services("a").Create(ctx, lbSvc("a/fourth", 4), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.waitIngress("a", "fourth", "10.9.0.1")
}

func TestControllerConfigValidate(t *testing.T) {
	cfg := ControllerConfig{DefaultPool: []string{"172.18.255.0/33"}, LeaderElection: &LeaderElection{}}
	cfg.Defaults()
	err := cfg.Validate()
	for _, want := range []string{"Client is required", "Dynamic is required", "DefaultPool", "Identity is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func TestControllerWithLeaderElectionTakesLease(t *testing.T) {
	kube := fake.NewClientset(lbSvc("a/svc", 0))
	c, err := NewController(ControllerConfig{
		Client: kube, Dynamic: dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{PoolResource: "IPAddressPoolList"}),
		DefaultPool:    []string{"10.0.0.1/32"},
		LeaderElection: &LeaderElection{Identity: "replica-1", LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	eventually(t, "allocation by the leader", func() bool {
		s, _ := kube.CoreV1().Services("a").Get(ctx, "svc", metav1.GetOptions{})
		return s != nil && len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].IP == "10.0.0.1"
	})
	lease, err := kube.CoordinationV1().Leases("kube-system").Get(ctx, "knet-lbipam", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "replica-1" {
		t.Fatalf("lease kube-system/knet-lbipam = %v, %v; want held by replica-1", lease, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

func TestSpeakerConfigValidate(t *testing.T) {
	cfg := SpeakerConfig{HeartbeatPort: 70000}
	cfg.Defaults()
	err := cfg.Validate()
	for _, want := range []string{"Client is required", "NodeName is required", "70000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if cfg.Interface != "eth0" || cfg.HeartbeatInterval != 100*time.Millisecond || cfg.MissedHeartbeats != 3 {
		t.Errorf("defaults: %+v", cfg)
	}
}

// A sync must not act on a cached Service that predates the controller's own status write:
// withWrites shows the written object until the informer catches up, then forgets it.
func TestControllerReadsItsOwnWritesUntilTheCacheHasThem(t *testing.T) {
	svc := func(rv, uid string, ips ...string) *v1.Service {
		s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "s", ResourceVersion: rv, UID: types.UID(uid)}}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	key := types.NamespacedName{Namespace: "a", Name: "s"}
	for _, tc := range []struct {
		name     string
		cached   []*v1.Service
		wantIP   string // ingress seen by the sync, "" for none or no Service
		wantKept bool   // the write is still remembered afterwards
	}{
		{"cache behind the write", []*v1.Service{svc("1", "u")}, "10.0.0.1", true},
		{"cache has the write", []*v1.Service{svc("2", "u", "10.0.0.1")}, "10.0.0.1", false},
		{"cache at the written resourceVersion", []*v1.Service{svc("2", "u")}, "", false},
		{"Service recreated", []*v1.Service{svc("5", "other")}, "", false},
		{"Service deleted", nil, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Controller{written: map[types.NamespacedName]*v1.Service{key: svc("2", "u", "10.0.0.1")}}
			got := c.withWrites(tc.cached)
			ip := ""
			if len(got) == 1 && len(got[0].Status.LoadBalancer.Ingress) == 1 {
				ip = got[0].Status.LoadBalancer.Ingress[0].IP
			}
			if ip != tc.wantIP {
				t.Errorf("the sync sees ingress %q, want %q", ip, tc.wantIP)
			}
			if _, kept := c.written[key]; kept != tc.wantKept {
				t.Errorf("write remembered = %v, want %v", kept, tc.wantKept)
			}
		})
	}
}
