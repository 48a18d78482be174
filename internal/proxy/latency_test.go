package proxy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"knet/internal/netnsrun"
)

// BenchmarkProgrammingLatency measures the proxy's share of network
// programming latency against real nftables: with 1k Services (10
// endpoints each) programmed, each iteration creates a Service and then its
// EndpointSlice (two real backends) in a fake API and reports the time from
// the Service create call to the first TCP connection through the new
// ClusterIP that succeeds, from a pod namespace. The API server's part (a
// watch event's delivery) is not in it; bench/proxy measures the whole.
// Run with -benchtime=20x; KNET_TEST_PROXY_DEBUG=1 prints the proxier's
// event and sync timings. Needs root.
func BenchmarkProgrammingLatency(b *testing.B) {
	tn := setupNet(b)
	serveTCP(b, tn.podA, "pod-a")
	serveTCP(b, tn.podB, "pod-b")
	const services = 1000
	objs := benchObjects(services)
	client := fake.NewClientset()
	for _, o := range objs {
		createObject(b, client, o)
	}
	startNSProxier(b, tn, client)

	var lat []time.Duration
	nftCPU := childrenCPUTime()
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("lat-%d", i)
		ip := fmt.Sprintf("10.97.%d.%d", i/250, 1+i%250)
		probe := startProbe(tn, ip+":80")
		t0 := time.Now()
		createObject(b, client, makeService("lat", name, ip, nil))
		createObject(b, client, makeSlice("lat", name, name+"-1", "http", v1.ProtocolTCP, 8080,
			ep{ip: "10.244.1.10", node: testNode}, ep{ip: "10.244.1.11", node: testNode}))
		select {
		case at := <-probe:
			lat = append(lat, at.Sub(t0))
		case <-time.After(10 * time.Second):
			b.Fatalf("no connection to %s within 10s", ip)
		}
		// Let the next create find the proxier idle, as a Service created
		// at a random moment usually does.
		time.Sleep(100 * time.Millisecond)
	}
	// CPU of the nft runs per new Service: on a shared machine CPU time,
	// not wall time, is what a sync asks of the CPUs. (The proxier's own
	// share is in its debug log; the probes make the process's CPU useless.)
	b.ReportMetric(float64((childrenCPUTime()-nftCPU).Microseconds())/1000/float64(len(lat)), "nft-cpu-ms/op")
	slices.Sort(lat)
	q := func(p int) float64 { return float64(lat[(p*len(lat)+99)/100-1].Microseconds()) / 1000 }
	b.ReportMetric(q(50), "p50-ms")
	b.ReportMetric(q(99), "p99-ms")
}

// startProbe starts a TCP connect to addr from pod B every millisecond,
// each attempt with its own short timeout (a SYN sent before the rules
// exist is lost), and delivers the time of the first that succeeds.
func startProbe(tn *testNet, addr string) <-chan time.Time {
	won := make(chan time.Time, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	go func() {
		defer cancel()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		done := make(chan struct{})
		var once sync.Once
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-tick.C:
			}
			go func() {
				var c net.Conn
				err := netnsrun.Run(tn.podB, func() (err error) {
					d := net.Dialer{Timeout: 300 * time.Millisecond}
					c, err = d.DialContext(ctx, "tcp4", addr)
					return err
				})
				if err != nil {
					return
				}
				at := time.Now()
				c.Close()
				once.Do(func() {
					won <- at
					close(done)
				})
			}()
		}
	}()
	return won
}

// childrenCPUTime is the user+system CPU time of this process's finished
// children (the nft runs).
func childrenCPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func createObject(t testing.TB, client *fake.Clientset, o any) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch o := o.(type) {
	case *v1.Service:
		_, err = client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discovery.EndpointSlice:
		_, err = client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		t.Fatalf("createObject: unexpected %T", o)
	}
	if err != nil {
		t.Fatal(err)
	}
}
