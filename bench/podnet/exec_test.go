package podnetbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"knet/internal/cni"
)

// TestCNIExecLatency measures CNI ADD and DEL the way the kubelet (and
// containerd) run them: libcni execs the plugin binary once per operation.
// KNET_BENCH_CNI_BINS lists the binaries to compare as name=path,...; the
// full knet binary pays its package initialisation on every exec, the small
// knet-cni does not.
func TestCNIExecLatency(t *testing.T) {
	if os.Getenv("KNET_BENCH") != "1" {
		t.Skip("benchmark: run bench/podnet/run.sh (sets KNET_BENCH=1)")
	}
	bins := os.Getenv("KNET_BENCH_CNI_BINS")
	if bins == "" {
		t.Skip("KNET_BENCH_CNI_BINS is empty")
	}
	prefix := os.Getenv("KNET_BENCH_PREFIX")
	if prefix == "" {
		prefix = "knettest-bench-" + randHex(3)
	}
	rounds := 30
	b := &bench{t: t, prefix: prefix + "x"}
	node := b.newNS("cninode")
	fmt.Printf("\nCNI through libcni (exec per operation), %d ADD+DEL each, pod netns reused\n", rounds)
	fmt.Printf("%-28s %9s %9s %9s %9s\n", "plugin binary", "ADD p50", "ADD p99", "DEL p50", "DEL p99")
	for i, spec := range strings.Split(bins, ",") {
		name, path, ok := strings.Cut(spec, "=")
		if !ok {
			t.Fatalf("KNET_BENCH_CNI_BINS entry %q is not name=path", spec)
		}
		if _, err := os.Stat(path); err != nil {
			fmt.Printf("%-28s missing (%v)\n", name, err)
			continue
		}
		binDir, confDir := t.TempDir(), t.TempDir()
		if err := os.Symlink(path, filepath.Join(binDir, cni.PluginType)); err != nil {
			t.Fatal(err)
		}
		if err := cni.WriteConfList(confDir, cni.NetConf{PodCIDR: fmt.Sprintf("10.243.%d.0/24", i), DataDir: t.TempDir(), Bridge: fmt.Sprintf("kbench%d", i), GSOMaxSize: cni.BigTCPGSOSize}); err != nil {
			t.Fatal(err)
		}
		list, err := libcni.LoadNetworkConf(confDir, cni.NetworkName)
		if err != nil {
			t.Fatal(err)
		}
		cn := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
		pod := b.newNS("cnipod")
		var addLat, delLat []time.Duration
		err = node.Do(func(ns.NetNS) error {
			for r := 0; r <= rounds; r++ { // round 0 warms up (creates the bridge)
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("exec-%d-%d", i, r), NetNS: pod.Path(), IfName: "eth0"}
				start := time.Now()
				if _, err := cn.AddNetworkList(context.Background(), list, rt); err != nil {
					return fmt.Errorf("%s ADD: %w", name, err)
				}
				mid := time.Now()
				if err := cn.DelNetworkList(context.Background(), list, rt); err != nil {
					return fmt.Errorf("%s DEL: %w", name, err)
				}
				if r > 0 {
					addLat = append(addLat, mid.Sub(start))
					delLat = append(delLat, time.Since(mid))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%-28s %9s %9s %9s %9s\n", name, ms(quantile(addLat, .5)), ms(quantile(addLat, .99)),
			ms(quantile(delLat, .5)), ms(quantile(delLat, .99)))
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
