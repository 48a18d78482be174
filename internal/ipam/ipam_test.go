package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openStore(t *testing.T, dir, cidr string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, Subnet: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func att(i int) Attachment { return Attachment{ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0"} }

func TestAllocateSkipsNetworkGatewayBroadcastAndExhausts(t *testing.T) {
	s := openStore(t, t.TempDir(), "10.0.0.8/29")
	got := map[netip.Addr]bool{}
	for i := 0; i < 5; i++ {
		ip, err := s.Allocate(att(i))
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		if got[ip] {
			t.Fatalf("address %s handed out twice", ip)
		}
		got[ip] = true
	}
	for _, bad := range []string{"10.0.0.8", "10.0.0.9", "10.0.0.15"} {
		if got[netip.MustParseAddr(bad)] {
			t.Errorf("allocated reserved address %s", bad)
		}
	}
	_, err := s.Allocate(att(99))
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("want ExhaustedError on a full /29, got %v", err)
	}
	for _, want := range []string{"10.0.0.8/29", "delete pods", "larger podCIDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("exhaustion error %q does not mention %q", err, want)
		}
	}
}

func TestAllocateIsIdempotentAndRoundRobin(t *testing.T) {
	s := openStore(t, t.TempDir(), "10.1.0.0/24")
	a, _ := s.Allocate(att(1))
	again, _ := s.Allocate(att(1))
	if a != again {
		t.Fatalf("repeated ADD got %s then %s", a, again)
	}
	b, _ := s.Allocate(att(2))
	if _, err := s.Release(att(2)); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Allocate(att(3))
	if c == b {
		t.Fatalf("freed address %s reused immediately; want round-robin", b)
	}
	if c != b.Next() {
		t.Errorf("next address after %s = %s, want %s", b, c, b.Next())
	}
}

func TestReleaseIdempotentAndByContainer(t *testing.T) {
	s := openStore(t, t.TempDir(), "10.1.0.0/24")
	ip, _ := s.Allocate(Attachment{"abc", "eth0"})
	ip2, _ := s.Allocate(Attachment{"abc", "net1"})
	freed, err := s.Release(Attachment{ContainerID: "abc"})
	if err != nil || len(freed) != 2 {
		t.Fatalf("release all of container: freed %v err %v, want %s and %s", freed, err, ip, ip2)
	}
	freed, err = s.Release(Attachment{ContainerID: "abc"})
	if err != nil || len(freed) != 0 {
		t.Fatalf("second release: freed %v err %v", freed, err)
	}
	if _, err := s.Release(Attachment{"never-seen", "eth0"}); err != nil {
		t.Fatalf("release of unknown container: %v", err)
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, "10.2.0.0/24")
	ip, _ := s.Allocate(att(1))
	s2 := openStore(t, dir, "10.2.0.0/24")
	got, ok, err := s2.Lookup(att(1))
	if err != nil || !ok || got != ip {
		t.Fatalf("after reopen Lookup = %s %v %v, want %s", got, ok, err, ip)
	}
	next, _ := s2.Allocate(att(2))
	if next == ip {
		t.Fatalf("reopened store handed out reserved %s again", ip)
	}
}

func TestCorruptReservationIsRemoved(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, "10.3.0.0/29")
	// A crash between O_EXCL create and write leaves an empty file.
	for _, name := range []string{"10.3.0.2", "10.3.0.3"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "10.3.0.4"), []byte("only-an-id"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := s.Reservations()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 0 {
		t.Fatalf("corrupt files counted as reservations: %v", res)
	}
	for _, name := range []string{"10.3.0.2", "10.3.0.3", "10.3.0.4"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("corrupt reservation %s still on disk (err %v)", name, err)
		}
	}
	// All 5 usable addresses of the /29 are free again.
	for i := 0; i < 5; i++ {
		if _, err := s.Allocate(att(i)); err != nil {
			t.Fatalf("allocate %d after repair: %v", i, err)
		}
	}
}

func TestGCKeepsOnlyValidAttachments(t *testing.T) {
	s := openStore(t, t.TempDir(), "10.4.0.0/24")
	for i := 0; i < 4; i++ {
		if _, err := s.Allocate(att(i)); err != nil {
			t.Fatal(err)
		}
	}
	kept1, _, _ := s.Lookup(att(1))
	freed, err := s.GC([]Attachment{att(1), att(3)})
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 2 {
		t.Fatalf("GC freed %v, want c000 and c002", freed)
	}
	res, _ := s.Reservations()
	owners := map[string]bool{}
	for _, r := range res {
		owners[r.ContainerID] = true
	}
	if len(res) != 2 || !owners["c001"] || !owners["c003"] {
		t.Fatalf("after GC reservations = %v", res)
	}
	if ip, _, _ := s.Lookup(att(1)); ip != kept1 {
		t.Fatalf("GC moved a valid reservation: %s -> %s", kept1, ip)
	}
}

func TestConcurrentAllocateAcrossStores(t *testing.T) {
	dir := t.TempDir()
	const n = 100
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One Store per goroutine, like separate plugin processes.
			s := openStore(t, dir, "10.5.0.0/24")
			ips[i], errs[i] = s.Allocate(att(i))
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i := range ips {
		if errs[i] != nil {
			t.Fatalf("allocate %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("%s given to both %d and %d", ips[i], j, i)
		}
		seen[ips[i]] = i
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{Dir: "", Subnet: netip.MustParsePrefix("10.0.0.0/24")},
		{Dir: "/x"},
		{Dir: "/x", Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		{Dir: "/x", Subnet: netip.MustParsePrefix("fd00::/64")},
		{Dir: "/x", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.1.1")},
	} {
		c.Defaults()
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
}

func TestReservationFromOldPodCIDRIsKeptUntilGC(t *testing.T) {
	dir := t.TempDir()
	old := openStore(t, dir, "10.6.0.0/24")
	oldIP, _ := old.Allocate(att(1))
	s := openStore(t, dir, "10.7.0.0/24")
	res, err := s.Reservations()
	if err != nil || len(res) != 1 || res[0].IP != oldIP {
		t.Fatalf("after podCIDR change reservations = %v, %v; want the old %s kept", res, err, oldIP)
	}
	ip, err := s.Allocate(att(2))
	if err != nil || !s.Subnet().Contains(ip) {
		t.Fatalf("allocate from new podCIDR: %s, %v", ip, err)
	}
	if _, err := s.GC([]Attachment{att(2)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lookup(att(1)); ok {
		t.Error("GC did not free the old podCIDR's reservation of a gone pod")
	}
}
