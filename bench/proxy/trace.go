package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// trialTrace timestamps what happens inside one latency trial, so the total can be split into
// its parts: the two create calls, the API server delivering the Service and EndpointSlice watch
// events (to the benchmark's own watch, a stand-in for the proxy's informer, which is a watch on
// the same API server), and knet committing the ClusterIP's rules (seen by `nft monitor` in its
// namespace: first the no-endpoints reject of the Service alone, then the service-ips element).
type trialTrace struct {
	svcCreated, sliceCreated time.Time // create calls returned
	svcEvent, sliceEvent     time.Time // ADDED events on the benchmark's watch
	rejectCommitted          time.Time // no-endpoint-services element for the ClusterIP
	programmed               time.Time // service-ips element for the ClusterIP
}

// eventWatch records when the API server delivers ADDED events for Services and EndpointSlices
// in the benchmark namespace.
type eventWatch struct {
	mu    sync.Mutex
	added map[string]time.Time // "Service/name" or "EndpointSlice/name"
}

func startEventWatch(ctx context.Context, client kubernetes.Interface) (*eventWatch, error) {
	w := &eventWatch{added: map[string]time.Time{}}
	svcs, err := client.CoreV1().Services(benchNamespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("watch Services: %w", err)
	}
	eps, err := client.DiscoveryV1().EndpointSlices(benchNamespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		svcs.Stop()
		return nil, fmt.Errorf("watch EndpointSlices: %w", err)
	}
	for kind, wi := range map[string]watch.Interface{"Service": svcs, "EndpointSlice": eps} {
		go func() {
			defer wi.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-wi.ResultChan():
					if !ok {
						return
					}
					at := time.Now()
					m, err := metaOf(ev.Object)
					if ev.Type != watch.Added || err != nil {
						continue
					}
					w.mu.Lock()
					if _, dup := w.added[kind+"/"+m]; !dup {
						w.added[kind+"/"+m] = at
					}
					w.mu.Unlock()
				}
			}
		}()
	}
	return w, nil
}

func metaOf(o any) (string, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return "", fmt.Errorf("%T has no metadata", o)
	}
	return m.GetName(), nil
}

func (w *eventWatch) at(kind, name string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.added[kind+"/"+name]
}

// nftMonitor runs `nft monitor` in a namespace and records when elements of the given maps are
// added, by their first key field (the address).
type nftMonitor struct {
	cmd   *exec.Cmd
	st    *state
	mu    sync.Mutex
	added map[string]time.Time // "map/address"
}

func startNftMonitor(st *state, ns, table string) (*nftMonitor, error) {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "monitor", "elements")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nft monitor in %s: %w", ns, err)
	}
	st.addProc(cmd.Process.Pid)
	m := &nftMonitor{cmd: cmd, st: st, added: map[string]time.Time{}}
	prefix := "add element ip " + table + " "
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			at := time.Now()
			// add element ip knet-proxy service-ips { 10.96.0.104 . tcp . 80 : goto ... }
			rest, ok := strings.CutPrefix(sc.Text(), prefix)
			if !ok {
				continue
			}
			mapName, elems, _ := strings.Cut(rest, " { ")
			for _, e := range strings.Split(elems, ", ") {
				addr, _, _ := strings.Cut(strings.TrimSpace(e), " ")
				key := mapName + "/" + addr
				m.mu.Lock()
				if _, dup := m.added[key]; !dup {
					m.added[key] = at
				}
				m.mu.Unlock()
			}
		}
	}()
	return m, nil
}

func (m *nftMonitor) at(mapName, addr string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.added[mapName+"/"+addr]
}

func (m *nftMonitor) stop() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	m.st.removeProc(m.cmd.Process.Pid)
}
