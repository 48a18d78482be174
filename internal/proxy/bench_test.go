package proxy

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// benchInputs builds n ClusterIP Services with 10 endpoints each, a tenth of
// them NodePorts.
func benchInputs(n int) Inputs { return testInputs(benchObjects(n)...) }

// benchObjects are benchInputs' Services and EndpointSlices.
func benchObjects(n int) []any {
	objs := make([]any, 0, 2*n)
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		svc := makeService("bench", name, fmt.Sprintf("10.%d.%d.%d", 96+i/65536, (i/256)%256, i%256), func(s *v1.Service) {
			if i%10 == 0 {
				s.Spec.Type = v1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = int32(30000 + i%2768)
			}
		})
		eps := make([]ep, 10)
		for j := range eps {
			k := i*10 + j
			eps[j] = ep{ip: fmt.Sprintf("10.%d.%d.%d", 128+k/65536, (k/256)%256, k%256), node: fmt.Sprintf("node-%d", j)}
		}
		objs = append(objs, svc, makeSlice("bench", name, name+"-1", "http", v1.ProtocolTCP, 8080, eps...))
	}
	return objs
}

// BenchmarkFullSync measures the pure part of a full sync: desired state,
// rendering and building the knftables transaction (not running nft).
func BenchmarkFullSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		in := benchInputs(n)
		b.Run(fmt.Sprintf("services=%d,endpoints=%d", n, 10*n), func(b *testing.B) {
			nft := knftables.NewFake(knftables.IPv4Family, TableName)
			b.ReportAllocs()
			ops := 0
			cpu := cpuTime()
			for b.Loop() {
				tx := nft.NewTransaction()
				plan(tx, nil, render(Compute(in)), nil, true)
				ops = tx.NumOperations()
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(ops), "nft-ops")
		})
	}
}

// BenchmarkIncrementalSync measures a sync after one Service's endpoints
// changed: the whole desired state is recomputed, only the difference is
// written.
func BenchmarkIncrementalSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		in := benchInputs(n)
		var memo Memo
		applied := renderFrom(ComputeWith(in, &memo), nil)
		changed := in
		changed.EndpointSlices = append([]*discovery.EndpointSlice(nil), in.EndpointSlices...)
		changed.EndpointSlices[0] = makeSlice("bench", "svc-0", "svc-0-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.200.0.1"})
		b.Run(fmt.Sprintf("services=%d,endpoints=%d", n, 10*n), func(b *testing.B) {
			nft := knftables.NewFake(knftables.IPv4Family, TableName)
			b.ReportAllocs()
			ops := 0
			cpu := cpuTime()
			for b.Loop() {
				tx := nft.NewTransaction()
				plan(tx, applied, renderFrom(ComputeWith(changed, &memo), applied), nil, false)
				ops = tx.NumOperations()
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(ops), "nft-ops")
		})
	}
}

// cpuTime is the process's user+system CPU time. On a machine shared with
// other work, CPU time per operation is comparable across runs where wall
// time is not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64((cpuTime()-since).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
