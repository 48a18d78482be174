package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// request is one finished poll of http://<LB IP>/hostname.
type request struct {
	start, end time.Time
	ok         bool
	body       string // the answering pod's name when ok
}

// poller sends GET /hostname to the LoadBalancer address every interval on a new connection
// (no keep-alive: a fresh client follows the neighbour entry the host has at that moment), each
// with its own timeout, and keeps every result.
type poller struct {
	mu   sync.Mutex
	reqs []request
}

func (p *poller) run(ctx context.Context, url string, interval, timeout time.Duration) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	inflight := make(chan struct{}, 2*int(timeout/interval)+10)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case inflight <- struct{}{}:
		default:
			continue
		}
		go func() {
			defer func() { <-inflight }()
			r := request{start: time.Now()}
			resp, err := hc.Get(url)
			if err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				r.ok = rerr == nil && resp.StatusCode == http.StatusOK
				r.body = strings.TrimSpace(string(b))
			}
			r.end = time.Now()
			p.mu.Lock()
			p.reqs = append(p.reqs, r)
			p.mu.Unlock()
		}()
	}
}

// between returns the requests that ended in [from, to), by end time.
func (p *poller) between(from, to time.Time) []request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []request
	for _, r := range p.reqs {
		if !r.end.Before(from) && r.end.Before(to) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].end.Before(out[j].end) })
	return out
}

// lastOK reports whether the last n requests that ended succeeded.
func (p *poller) lastOK(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) < n {
		return false
	}
	for _, r := range p.reqs[len(p.reqs)-n:] {
		if !r.ok {
			return false
		}
	}
	return true
}

// neighChange is the host's neighbour entry for the LoadBalancer address taking a new MAC.
type neighChange struct {
	at  time.Time
	mac string
}

// neighWatcher follows the host's neighbour entry for one address on the cluster's bridge
// through netlink notifications, so a gratuitous ARP's effect is timed to the event.
type neighWatcher struct {
	ip      net.IP
	link    int
	mu      sync.Mutex
	changes []neighChange
	current string
}

func (w *neighWatcher) note(mac string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if mac == "" || mac == w.current {
		return
	}
	w.current = mac
	w.changes = append(w.changes, neighChange{time.Now(), mac})
}

// forget drops the current MAC after the entry was deleted, so the next answer counts as a change.
func (w *neighWatcher) forget() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.current = ""
}

func (w *neighWatcher) mac() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

func (w *neighWatcher) since(t time.Time) []neighChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []neighChange
	for _, c := range w.changes {
		if !c.at.Before(t) {
			out = append(out, c)
		}
	}
	return out
}

func (w *neighWatcher) run(ctx context.Context) error {
	ch := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	if err := netlink.NeighSubscribe(ch, done); err != nil {
		return fmt.Errorf("subscribe to neighbour events: %w", err)
	}
	go func() {
		<-ctx.Done()
		close(done)
	}()
	// The entry may exist before the subscription; read it once, then also every second in
	// case a notification is lost (netlink drops events when the socket buffer is full).
	poll := func() {
		ns, err := netlink.NeighList(w.link, unix.AF_INET)
		if err != nil {
			return
		}
		for _, n := range ns {
			if n.IP.Equal(w.ip) && len(n.HardwareAddr) > 0 && n.State&(unix.NUD_FAILED|unix.NUD_INCOMPLETE) == 0 {
				w.note(n.HardwareAddr.String())
			}
		}
	}
	poll()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			poll()
		case u, ok := <-ch:
			if !ok {
				return nil
			}
			n := u.Neigh
			if u.Type == unix.RTM_NEWNEIGH && n.LinkIndex == w.link && n.IP.Equal(w.ip) && len(n.HardwareAddr) > 0 &&
				n.State&(unix.NUD_FAILED|unix.NUD_INCOMPLETE) == 0 {
				w.note(n.HardwareAddr.String())
			}
		}
	}
}
