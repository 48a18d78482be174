package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"knet/internal/dns"
)

// leanDNSBinary is the DNS server alone (cmd/knet-dns), built next to knet.
const leanDNSBinary = "knet-dns"

func dnsCommand() *cobra.Command {
	var cl dns.CommandLine
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Serve cluster DNS (the kube-dns Service) from the Kubernetes API; runs as the knet-dns add-on",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			execLeanDNS()
			return cl.Run()
		},
	}
	cl.AddFlags(cmd.Flags())
	return cmd
}

// execLeanDNS replaces this process with knet-dns, with the same arguments,
// when that binary sits next to the knet binary: the same server without the
// control plane linked in uses a fraction of the memory. It returns only
// when there is no such binary or the exec failed; knet then serves DNS
// itself.
func execLeanDNS() {
	self, err := os.Executable()
	if err != nil {
		return
	}
	lean := filepath.Join(filepath.Dir(self), leanDNSBinary)
	if st, err := os.Stat(lean); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return
	}
	argv := append([]string{lean}, os.Args[1:]...)
	err = syscall.Exec(lean, argv, os.Environ())
	slog.Warn("could not exec the lean DNS server; serving from knet itself", "path", lean, "err", err)
}
