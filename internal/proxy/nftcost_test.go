package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// BenchmarkRealNftablesSync splits a sync at 1k and 10k Services into its
// steps against real nftables in a throwaway namespace: desired state,
// render, plan (all pure) and running the transaction (nft), for a full sync
// on an empty table and for an incremental one after one Service's endpoints
// changed. Needs root.
func BenchmarkRealNftablesSync(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (network namespace, nftables)")
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			buf := make([]byte, 3)
			_, _ = rand.Read(buf)
			name := "knettest-proxy-" + hex.EncodeToString(buf)
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				b.Fatalf("ip netns add: %v: %s", err, out)
			}
			b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
			ns, err := netns.GetFromName(name)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ns.Close() })
			nft := newNSNFT(b, ns)
			ctx := context.Background()
			in := benchInputs(n)
			changed := in
			changed.EndpointSlices = append([]*discovery.EndpointSlice(nil), in.EndpointSlices...)

			step := func(what string, f func()) time.Duration {
				t0 := time.Now()
				f()
				d := time.Since(t0)
				b.ReportMetric(float64(d.Microseconds())/1000, what+"-ms")
				return d
			}
			for i := 0; b.Loop(); i++ {
				_ = exec.Command("ip", "netns", "exec", name, "nft", "delete", "table", "ip", TableName).Run()
				var st *State
				var r *ruleset
				tx := nft.NewTransaction()
				step("full-compute", func() { st = Compute(in) })
				step("full-render", func() { r = render(st) })
				step("full-plan", func() { plan(tx, nil, r, map[string][]string{}, true) })
				step("full-nft", func() {
					if err := nft.Run(ctx, tx); err != nil {
						b.Fatal(err)
					}
				})
				changed.EndpointSlices[0] = makeSlice("bench", "svc-0", "svc-0-1", "http", v1.ProtocolTCP, 8080, ep{ip: fmt.Sprintf("10.200.0.%d", 1+i%200)})
				var st2 *State
				var r2 *ruleset
				tx2 := nft.NewTransaction()
				step("incr-compute", func() { st2 = Compute(changed) })
				step("incr-render", func() { r2 = renderFrom(st2, r) })
				step("incr-plan", func() { plan(tx2, r, r2, nil, false) })
				step("incr-nft", func() {
					if err := nft.Run(ctx, tx2); err != nil {
						b.Fatal(err)
					}
				})
				b.ReportMetric(float64(tx2.NumOperations()), "incr-ops")
			}
		})
	}
}
