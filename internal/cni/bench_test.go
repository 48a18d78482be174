package cni

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
)

// BenchmarkAddDel measures in-process CNI ADD and DEL of the same pod netns
// (bridge already present) and reports p50/p99 of ADD, DEL and both.
// DEL is dominated by the kernel unregistering the veth (an RCU grace
// period), so it is reported on its own rather than hidden in the sum.
// "bigtcp" is knet up's host-gw config (gsoMaxSize: three more netlink
// requests per ADD). Run: go test -run '^$' -bench AddDel ./internal/cni/
func BenchmarkAddDel(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchAddDel(b, nil) })
	b.Run("bigtcp", func(b *testing.B) { benchAddDel(b, map[string]any{"gsoMaxSize": BigTCPGSOSize}) })
}

func benchAddDel(b *testing.B, extra map[string]any) {
	node := newNS(b, "node")
	pod := newNS(b, "pod")
	conf := pluginConf(b, confOpts{cidr: "10.244.30.0/24", dataDir: b.TempDir(), extra: extra})
	// Warm up: the first ADD creates the bridge and sets sysctls.
	warm := &skel.CmdArgs{ContainerID: "warm", Netns: pod.Path(), IfName: "eth0", StdinData: conf}
	if _, err := add(b, node, warm); err != nil {
		b.Fatal(err)
	}
	if err := del(b, node, warm); err != nil {
		b.Fatal(err)
	}
	addLat := make([]time.Duration, 0, b.N)
	delLat := make([]time.Duration, 0, b.N)
	sumLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	err := node.Do(func(ns.NetNS) error {
		for i := 0; i < b.N; i++ {
			a := &skel.CmdArgs{ContainerID: fmt.Sprintf("bench-%d", i), Netns: pod.Path(), IfName: "eth0", StdinData: conf}
			start := time.Now()
			if _, err := testPlugin.Add(a); err != nil {
				return err
			}
			mid := time.Now()
			if err := testPlugin.Del(a); err != nil {
				return err
			}
			end := time.Now()
			addLat = append(addLat, mid.Sub(start))
			delLat = append(delLat, end.Sub(mid))
			sumLat = append(sumLat, end.Sub(start))
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	q := func(lat []time.Duration, q float64) time.Duration {
		slices.Sort(lat)
		return lat[min(len(lat)-1, int(q*float64(len(lat))))]
	}
	for _, m := range []struct {
		name string
		lat  []time.Duration
	}{{"add", addLat}, {"del", delLat}, {"add+del", sumLat}} {
		b.ReportMetric(float64(q(m.lat, 0.50).Microseconds()), m.name+"-p50-us")
		b.ReportMetric(float64(q(m.lat, 0.99).Microseconds()), m.name+"-p99-us")
	}
	b.Logf("n=%d ADD p50=%v p99=%v | DEL p50=%v p99=%v | ADD+DEL p50=%v p99=%v", len(sumLat),
		q(addLat, .5), q(addLat, .99), q(delLat, .5), q(delLat, .99), q(sumLat, .5), q(sumLat, .99))
}
