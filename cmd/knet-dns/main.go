// Command knet-dns is knet's cluster DNS server alone: `knet dns` in a
// binary that links only the DNS package, client-go and miekg/dns, not the
// control plane, kubelet and CNI plugin of the knet binary. `knet dns` execs
// it when it sits next to the knet binary, so the add-on keeps running image
// `knet` with command `knet dns` while using a fraction of the memory.
//
// It takes the flags of `knet dns` (a leading "dns" argument is accepted, so
// the exec passes the knet arguments unchanged).
//
// Memory: unless GOGC or GOMEMLIMIT are set in the environment, it runs with
// GOGC=50 and a soft GOMEMLIMIT of 48 MiB (see gcDefaults): the live heap is
// a few MB, so a tighter collector trades little CPU for a smaller RSS.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/pflag"

	"knet/internal/dns"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "dns" {
		args = args[1:]
	}
	var cl dns.CommandLine
	fs := pflag.NewFlagSet("knet-dns", pflag.ContinueOnError)
	cl.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "knet-dns: unexpected arguments %q (all settings are flags, see --help)\n", fs.Args())
		os.Exit(2)
	}
	gcDefaults()
	if err := cl.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "knet-dns:", err)
		os.Exit(1)
	}
}

// gcDefaults applies knet-dns's collector settings where the environment
// sets none. The live heap is small (informer caches, the snapshot, the
// answer cache) and a DNS add-on runs under a memory limit, so collecting
// at 50% growth and softly capping the heap near 48 MiB keeps the RSS low;
// GOMEMLIMIT is soft, so a bigger cluster still grows past it, collecting
// more often.
func gcDefaults() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(50)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(48 << 20)
	}
}
