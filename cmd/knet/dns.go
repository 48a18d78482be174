package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"knet/internal/dns"
)

func dnsCommand() *cobra.Command {
	var cfg dns.Config
	var upstreamsFrom, kubeconfig string
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Serve cluster DNS (the kube-dns Service) from the Kubernetes API; runs as the knet-dns add-on",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var err error
			if cfg.Client, err = newClient(kubeconfig); err != nil {
				return err
			}
			if upstreamsFrom != "" {
				more, err := dns.UpstreamsFromResolvConf(upstreamsFrom)
				if err != nil {
					return err
				}
				cfg.Upstreams = append(cfg.Upstreams, more...)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
			s, err := dns.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	f.StringVar(&cfg.Listen, "listen", ":53", "DNS address (UDP and TCP)")
	f.StringVar(&cfg.HealthListen, "health-listen", ":8080", "HTTP address for /healthz and /readyz")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "cluster domain")
	f.Uint32Var(&cfg.TTL, "ttl", 5, "TTL of cluster answers, seconds")
	f.StringArrayVar(&cfg.Upstreams, "upstream", nil, "resolver ip:port for names outside the cluster (repeatable); none: REFUSED")
	f.StringVar(&upstreamsFrom, "upstreams-from", "", "also forward to the nameservers of this resolv.conf")
	return cmd
}
