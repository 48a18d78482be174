package nftsession

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	"knet/internal/netnsrun"
)

// newSession makes a throwaway network namespace and a Session in it whose calls all run
// inside the namespace (as the proxy's do, which runs in its node's namespace).
func newSession(t *testing.T) (*Session, func(func() error) error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, nftables)")
	}
	buf := make([]byte, 3)
	_, _ = rand.Read(buf)
	name := "knettest-nfts-" + hex.EncodeToString(buf)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	in := func(f func() error) error { return netnsrun.Run(ns, f) }
	var s *Session
	err = in(func() error {
		inner, err := knftables.New(knftables.IPv4Family, "knettest")
		if err != nil {
			return err
		}
		s, err = New(inner)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, in
}

func run(t *testing.T, s *Session, in func(func() error) error, tx *knftables.Transaction) error {
	t.Helper()
	return in(func() error { return s.Run(context.Background(), tx) })
}

func elements(t *testing.T, s *Session, in func(func() error) error) []string {
	t.Helper()
	var els []*knftables.Element
	if err := in(func() (err error) { els, err = s.ListElements(context.Background(), "set", "addrs"); return err }); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range els {
		keys = append(keys, strings.Join(e.Key, " . "))
	}
	slices.Sort(keys)
	return keys
}

func pid(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

func TestSessionAppliesTransactionsAtomically(t *testing.T) {
	s, in := newSession(t)
	tx := s.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "addrs", Type: "ipv4_addr"})
	tx.Add(&knftables.Chain{Name: "c"})
	tx.Add(&knftables.Rule{Chain: "c", Rule: "ip daddr @addrs counter"})
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.1"}})
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	first := pid(s)
	if first == 0 {
		t.Fatal("no nft process after a Run")
	}
	tx = s.NewTransaction()
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.2"}})
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, s, in), []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(got, want) {
		t.Fatalf("elements %v, want %v", got, want)
	}
	if pid(s) != first {
		t.Errorf("the second Run started another nft (pid %d, was %d)", pid(s), first)
	}

	// A batch nft rejects changes nothing, and its error is knftables' own.
	tx = s.NewTransaction()
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.3"}})
	tx.Delete(&knftables.Chain{Name: "no-such-chain"})
	err := run(t, s, in, tx)
	if err == nil || !knftables.IsNotFound(err) {
		t.Fatalf("deleting a missing chain: err %v, want a not-found error", err)
	}
	if got, want := elements(t, s, in), []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(got, want) {
		t.Fatalf("after a failed batch elements are %v, want %v", got, want)
	}
	// The session survives the failure.
	tx = s.NewTransaction()
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.4"}})
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, s, in), []string{"10.0.0.1", "10.0.0.2", "10.0.0.4"}; !slices.Equal(got, want) {
		t.Fatalf("elements %v, want %v", got, want)
	}

	// An operation knftables refuses to write never reaches nft.
	tx = s.NewTransaction()
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.5"}})
	tx.Add(&knftables.Rule{Rule: "counter"}) // no chain
	if err := run(t, s, in, tx); err == nil {
		t.Fatal("a rule without a chain was accepted")
	}
	if got := elements(t, s, in); slices.Contains(got, "10.0.0.5") {
		t.Fatalf("an invalid transaction was partly applied: %v", got)
	}
}

func TestSessionLargeTransaction(t *testing.T) {
	s, in := newSession(t)
	tx := s.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "addrs", Type: "ipv4_addr"})
	const n = 20000
	for i := range n {
		tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.1." + strconv.Itoa(i/250) + "." + strconv.Itoa(1+i%250)}})
	}
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	if got := len(elements(t, s, in)); got != n {
		t.Fatalf("%d elements, want %d", got, n)
	}
}

func TestSessionHandsLargeTransactionsToKnftables(t *testing.T) {
	s, in := newSession(t)
	old := maxScript
	maxScript = 100
	t.Cleanup(func() { maxScript = old })
	// Few operations but over maxScript bytes.
	tx := s.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "addrs", Type: "ipv4_addr", Comment: knftables.PtrTo(strings.Repeat("x", 100))})
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	if p := pid(s); p != 0 {
		t.Errorf("a %d-byte transaction started the session's process (pid %d)", len(tx.String()), p)
	}
	// Many operations.
	tx = s.NewTransaction()
	for i := range 10 {
		tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.2.0." + strconv.Itoa(i+1)}})
	}
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	if p := pid(s); p != 0 {
		t.Errorf("a transaction over maxScript started the session's process (pid %d)", p)
	}
	if got := len(elements(t, s, in)); got != 10 {
		t.Fatalf("%d elements, want 10", got)
	}
}

func TestSessionProcessLifecycle(t *testing.T) {
	s, in := newSession(t)
	add := func(key string) error {
		tx := s.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Add(&knftables.Set{Name: "addrs", Type: "ipv4_addr"})
		tx.Add(&knftables.Element{Set: "addrs", Key: []string{key}})
		return run(t, s, in, tx)
	}
	if err := add("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	first := pid(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(first) {
		t.Fatalf("nft (pid %d) still runs after Close", first)
	}
	// Usable after Close: a new process.
	if err := add("10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	second := pid(s)
	if second == 0 || second == first {
		t.Fatalf("Run after Close: pid %d (first was %d)", second, first)
	}

	// A process that dies is replaced; the Run that finds it dead fails.
	if err := syscall.Kill(second, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := add("10.0.0.3"); err == nil {
		t.Fatal("a Run on a killed nft process reported success")
	}
	if err := add("10.0.0.3"); err != nil {
		t.Fatalf("the Run after a dead process: %v", err)
	}

	// After maxRuns transactions the process is replaced.
	old := maxRuns
	maxRuns = 2
	t.Cleanup(func() { maxRuns = old })
	_ = s.Close()
	_ = add("10.0.0.4")
	p := pid(s)
	_ = add("10.0.0.5")
	if pid(s) != 0 || alive(p) {
		t.Fatalf("after %d Runs the process (pid %d) was not replaced", maxRuns, p)
	}
	if got, want := elements(t, s, in), []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}; !slices.Equal(got, want) {
		t.Fatalf("elements %v, want %v", got, want)
	}
}

func TestSessionContextCancelled(t *testing.T) {
	s, in := newSession(t)
	tx := s.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Add(&knftables.Set{Name: "addrs", Type: "ipv4_addr"})
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tx = s.NewTransaction()
	tx.Add(&knftables.Element{Set: "addrs", Key: []string{"10.0.0.1"}})
	if err := in(func() error { return s.Run(ctx, tx) }); err == nil {
		t.Fatal("Run with a cancelled context succeeded")
	}
	if got := elements(t, s, in); len(got) != 0 {
		t.Fatalf("a cancelled Run applied %v", got)
	}
	if err := run(t, s, in, tx); err != nil {
		t.Fatal(err)
	}
}

func alive(pid int) bool {
	// Reaped children are gone; a zombie would still answer signal 0, but the session
	// always waits for its process.
	return syscall.Kill(pid, 0) == nil
}
