package podnet

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// fakeDataplane records kernel state in memory and counts mutations, so a
// test can assert "a second sync changes nothing".
type fakeDataplane struct {
	mu        sync.Mutex
	routes    map[netip.Prefix]Route
	neighbors map[string]Neighbor
	links     map[string]VXLANSpec
	mutations int
	failNext  error
}

func newFake() *fakeDataplane {
	return &fakeDataplane{routes: map[netip.Prefix]Route{}, neighbors: map[string]Neighbor{}, links: map[string]VXLANSpec{}}
}

func (f *fakeDataplane) Routes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeDataplane) ReplaceRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	f.routes[r.Dst] = r
	f.mutations++
	return nil
}

func (f *fakeDataplane) DeleteRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, r.Dst)
	f.mutations++
	return nil
}

func (f *fakeDataplane) Neighbors(dev string) ([]Neighbor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Neighbor
	for _, n := range f.neighbors {
		if n.Dev == dev {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeDataplane) ReplaceNeighbor(n Neighbor) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.neighbors[n.key()] = n
	f.mutations++
	return nil
}

func (f *fakeDataplane) DeleteNeighbor(n Neighbor) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.neighbors, n.key())
	f.mutations++
	return nil
}

func (f *fakeDataplane) EnsureVXLAN(s VXLANSpec) (net.HardwareAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.links[s.Name]; !ok || fmt.Sprint(old) != fmt.Sprint(s) {
		f.links[s.Name] = s
		f.mutations++
	}
	return s.MAC, nil
}

func (f *fakeDataplane) DeleteLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		delete(f.links, name)
		f.mutations++
	}
	return nil
}

// dump renders the state like `ip route` / `bridge fdb` lines, sorted.
func (f *fakeDataplane) dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, r := range f.routes {
		lines = append(lines, "route "+r.String())
	}
	for _, n := range f.neighbors {
		kind := "neigh"
		if n.FDB {
			kind = "fdb"
		}
		lines = append(lines, fmt.Sprintf("%s %s %s dev %s", kind, n.IP, n.MAC, n.Dev))
	}
	for name := range f.links {
		lines = append(lines, "link "+name)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
