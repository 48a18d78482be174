package netpol

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/knftables"
)

// TestIncrementalPlanEqualsRebuild walks through a sequence of generated
// policy sets, moving one table incrementally from each to the next, and
// checks it always equals a table built from scratch.
func TestIncrementalPlanEqualsRebuild(t *testing.T) {
	pods, nss := makePods(), makeNamespaces()
	g := policyGen{rand.New(rand.NewPCG(7, 7))}
	inc := knftables.NewFake(knftables.IPv4Family, TableName)
	var applied *ruleset
	for step := range 60 {
		policies := g.policies()
		if step%10 == 9 {
			policies = nil // back to no policy at all
		}
		next := render(Compile(Inputs{Policies: policies, Pods: pods, Namespaces: nss, NodeName: "node-1", AlwaysAllowed: fixtureNodeIPs["node-1"]}))
		tx := inc.NewTransaction()
		plan(tx, applied, next)
		if err := inc.Run(context.Background(), tx); err != nil {
			t.Fatalf("step %d: incremental apply: %v", step, err)
		}
		applied = next
		want := fakeTable(t, "node-1", policies, pods, nss).Dump()
		if got := inc.Dump(); got != want {
			t.Fatalf("step %d: incremental table differs from rebuild\n--- incremental:\n%s\n--- rebuild:\n%s", step, got, want)
		}
		tx = inc.NewTransaction()
		plan(tx, applied, next)
		if n := tx.NumOperations(); n != 0 {
			t.Fatalf("step %d: a second plan with nothing changed has %d operations", step, n)
		}
	}
}

// flakyNFT fails the next failures Runs, and records every Run.
type flakyNFT struct {
	knftables.Interface
	mu       sync.Mutex
	failures int
	ops      []int
}

func (f *flakyNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, tx.NumOperations())
	if f.failures > 0 {
		f.failures--
		return errors.New("injected: netlink: Operation not permitted")
	}
	return f.Interface.Run(ctx, tx)
}

func (f *flakyNFT) runs() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.ops...)
}

func newTestController(t *testing.T, nft knftables.Interface, objs ...any) (*Controller, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	for _, ns := range makeNamespaces() {
		if _, err := client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range makePods() {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(Config{
		Client: client, NodeName: "node-1", PodCIDR: "10.244.1.0/24", NFT: nft,
		MinSyncInterval: time.Millisecond, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, client
}

func runController(t *testing.T, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-c.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("controller never synced")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestControllerFollowsPolicies: creating a policy isolates the selected
// local pod, deleting it lifts the isolation, and a resync with nothing
// changed writes nothing.
func TestControllerFollowsPolicies(t *testing.T) {
	fk := knftables.NewFake(knftables.IPv4Family, TableName)
	nft := &flakyNFT{Interface: fk}
	c, client := newTestController(t, nft)
	runController(t, c)
	xa := fixtureIP("x", "a").String()
	isolated := func() bool { return fk.Table != nil && fk.Table.Maps[mapIngressPods].FindElement(xa) != nil }
	if isolated() {
		t.Fatal("x/a isolated before any policy exists")
	}
	if fk.Table.Sets[setAlwaysAllow].FindElement("10.244.1.1") == nil {
		t.Errorf("pod gateway 10.244.1.1 (from PodCIDR) missing from %s", setAlwaysAllow)
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}}
	np.Spec.PodSelector.MatchLabels = map[string]string{"pod": "a"}
	if _, err := client.NetworkingV1().NetworkPolicies("x").Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "x/a to be isolated", isolated)
	// A pod status change that policy does not read must not sync anything.
	before := len(nft.runs())
	p, _ := client.CoreV1().Pods("x").Get(context.Background(), "b", metav1.GetOptions{})
	p.Status.Message = "unrelated"
	if _, err := client.CoreV1().Pods("x").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.markDirty() // and an explicit resync changes nothing either
	waitFor(t, "the resync", func() bool { return c.Stats().Syncs >= 3 })
	for _, n := range nft.runs()[before:] {
		t.Errorf("a sync with nothing changed ran a transaction of %d operations", n)
	}
	if err := client.NetworkingV1().NetworkPolicies("x").Delete(context.Background(), "deny", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "x/a to be open again", func() bool { return !isolated() })
	if len(fk.Table.Chains) != 1 || len(fk.Table.Sets) != 1 {
		t.Errorf("group chains left behind after the last policy went:\n%s", fk.Dump())
	}
}

// TestControllerRetriesFailedApply: a failed apply leaves the previous
// rules in force, is counted and retried, and the retry converges.
func TestControllerRetriesFailedApply(t *testing.T) {
	fk := knftables.NewFake(knftables.IPv4Family, TableName)
	nft := &flakyNFT{Interface: fk}
	c, client := newTestController(t, nft)
	runController(t, c)
	good := fk.Dump()
	nft.mu.Lock()
	nft.failures = 1 << 30
	nft.mu.Unlock()
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny"}}
	if _, err := client.NetworkingV1().NetworkPolicies("x").Create(context.Background(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two failed attempts", func() bool { return c.Stats().SyncFailures >= 2 })
	if got := fk.Dump(); got != good {
		t.Errorf("failed applies changed the table:\n%s", got)
	}
	nft.mu.Lock()
	nft.failures = 0
	nft.mu.Unlock()
	waitFor(t, "the retry to converge", func() bool {
		return fk.Table.Maps[mapIngressPods].FindElement(fixtureIP("x", "a").String()) != nil
	})
	// After a failure the kernel state is unknown: the retry rebuilds the
	// whole table, in one transaction.
	runs := nft.runs()
	if last := runs[len(runs)-1]; last < 10 {
		t.Errorf("the converging transaction had %d operations; want a full rebuild", last)
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{NodeIPs: nil, PodCIDR: "banana"}
	c.Defaults()
	err := c.Validate()
	for _, want := range []string{"Client is required", "NodeName is required", "PodCIDR"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
