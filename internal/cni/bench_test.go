package cni

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
)

// BenchmarkAddDel measures one in-process CNI ADD followed by DEL of the
// same pod netns (bridge already present), and reports p50/p99 latency.
// Run: go test -run '^$' -bench AddDel ./internal/cni/
func BenchmarkAddDel(b *testing.B) {
	node := newNS(b, "node")
	pod := newNS(b, "pod")
	conf := pluginConf(b, confOpts{cidr: "10.244.30.0/24", dataDir: b.TempDir()})
	// Warm up: the first ADD creates the bridge and sets sysctls.
	warm := &skel.CmdArgs{ContainerID: "warm", Netns: pod.Path(), IfName: "eth0", StdinData: conf}
	if _, err := add(b, node, warm); err != nil {
		b.Fatal(err)
	}
	if err := del(b, node, warm); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	err := node.Do(func(ns.NetNS) error {
		for i := 0; i < b.N; i++ {
			a := &skel.CmdArgs{ContainerID: fmt.Sprintf("bench-%d", i), Netns: pod.Path(), IfName: "eth0", StdinData: conf}
			start := time.Now()
			if _, err := testPlugin.Add(a); err != nil {
				return err
			}
			if err := testPlugin.Del(a); err != nil {
				return err
			}
			lat = append(lat, time.Since(start))
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.50).Microseconds()), "p50-us")
	b.ReportMetric(float64(p(0.99).Microseconds()), "p99-us")
	b.Logf("ADD+DEL n=%d p50=%v p99=%v", len(lat), p(0.50), p(0.99))
}
