package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"knet/internal/ingress"
)

func ingressCommand() *cobra.Command {
	var cfg ingress.Config
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "ingress",
		Short: "Run the Ingress controller and L7 proxy (IngressClass knet); runs as the knet-ingress add-on",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var err error
			if cfg.Client, err = newClient(kubeconfig); err != nil {
				return err
			}
			cfg.Logger = newLogger()
			c, err := ingress.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return c.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	f.StringVar(&cfg.HTTPListen, "http-listen", ":80", "HTTP address")
	f.StringVar(&cfg.HTTPSListen, "https-listen", ":443", "HTTPS address")
	f.StringVar(&cfg.HealthListen, "health-listen", ":10254", "HTTP address for /healthz and /readyz")
	f.StringVar(&cfg.ClassName, "class", "knet", "IngressClass name this controller owns")
	f.StringVar(&cfg.ControllerName, "controller", "knet.dev/ingress", "IngressClass spec.controller value")
	f.StringVar(&cfg.PublishService, "publish-service", "kube-system/knet-ingress", "Service whose LoadBalancer address is published in Ingress status")
	return cmd
}
