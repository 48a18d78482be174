package dns

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// CommandLine is the command line of `knet dns` and of the lean `knet-dns`
// binary, defined once so that `knet dns` can exec `knet-dns` with its own
// arguments unchanged.
type CommandLine struct {
	Config        Config
	Kubeconfig    string
	UpstreamsFrom string
}

// AddFlags registers the flags on fs, with defaults that work in a cluster
// (in-cluster credentials, port 53, no upstreams).
func (c *CommandLine) AddFlags(fs *pflag.FlagSet) {
	cfg := &c.Config
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	fs.StringVar(&cfg.Listen, "listen", ":53", "DNS address (UDP and TCP)")
	fs.StringVar(&cfg.HealthListen, "health-listen", ":8080", "HTTP address for /healthz and /readyz")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", "cluster.local", "cluster domain")
	fs.Uint32Var(&cfg.TTL, "ttl", 5, "TTL of cluster answers, seconds")
	fs.StringArrayVar(&cfg.Upstreams, "upstream", nil, "resolver ip:port for names outside the cluster (repeatable); none: REFUSED")
	fs.StringVar(&c.UpstreamsFrom, "upstreams-from", "", "also forward to the nameservers of this resolv.conf")
}

// Server builds the Server the command line describes, logging to stderr.
func (c *CommandLine) Server() (*Server, error) {
	cfg := c.Config
	var err error
	if cfg.Source, err = NewSourceFromKubeconfig(c.Kubeconfig); err != nil {
		return nil, err
	}
	if c.UpstreamsFrom != "" {
		more, err := UpstreamsFromResolvConf(c.UpstreamsFrom)
		if err != nil {
			return nil, err
		}
		cfg.Upstreams = append(append([]string(nil), cfg.Upstreams...), more...)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	return New(cfg)
}

// Run builds the Server and serves until SIGTERM or SIGINT.
func (c *CommandLine) Run() error {
	s, err := c.Server()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return s.Run(ctx)
}
