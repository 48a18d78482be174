package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"knet/internal/podnet"
)

type agentOptions struct {
	kubeconfig  string
	nodeName    string
	nodeIP      string
	clusterCIDR string
	underlay    string
	mode        string
	routes      bool
	proxy       bool
	netpol      bool
	speaker     bool
}

// agentCommand is the networking agent alone, one per node of an existing cluster (a DaemonSet
// with hostNetwork), or in a bare network namespace for benchmarks: pod routes between nodes and
// the service proxy, for the node it runs on.
func agentCommand() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the networking agent for one node: pod routes, service proxy, NetworkPolicy, LoadBalancer announcement",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runAgent(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	cmd.Flags().StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	cmd.Flags().StringVar(&o.nodeIP, "node-ip", os.Getenv("NODE_IP"), "this node's InternalIP (default $NODE_IP)")
	cmd.Flags().StringVar(&o.clusterCIDR, "cluster-cidr", "10.244.0.0/16", "the pod range")
	cmd.Flags().StringVar(&o.underlay, "underlay", "eth0", "the link to the other nodes")
	cmd.Flags().StringVar(&o.mode, "pod-network", "host-gw", "routes between nodes: host-gw or vxlan")
	cmd.Flags().BoolVar(&o.routes, "routes", true, "program routes to other nodes' podCIDRs")
	cmd.Flags().BoolVar(&o.proxy, "proxy", true, "run the service proxy")
	cmd.Flags().BoolVar(&o.netpol, "network-policy", true, "enforce NetworkPolicies for this node's pods")
	cmd.Flags().BoolVar(&o.speaker, "lb-speaker", true, "announce LoadBalancer addresses on the underlay (L2)")
	return cmd
}

func runAgent(ctx context.Context, o agentOptions) error {
	if o.nodeName == "" || o.nodeIP == "" || net.ParseIP(o.nodeIP) == nil {
		return errors.New("--node-name and --node-ip are required (a DaemonSet passes them from spec.nodeName and status.hostIP)")
	}
	client, err := newClient(o.kubeconfig)
	if err != nil {
		return err
	}
	log := newLogger().With("node", o.nodeName)
	cfg := nodeConfig{NodeName: o.nodeName, NodeIP: o.nodeIP, ClusterCIDR: o.clusterCIDR, PodNetworkMode: o.mode, Underlay: o.underlay}
	if o.routes {
		if err := startRoutes(ctx, log, client, cfg); err != nil {
			return err
		}
	}
	if o.proxy {
		if err := startServiceProxy(ctx, log, client, cfg); err != nil {
			return err
		}
	}
	if o.netpol {
		if err := startNetworkPolicy(ctx, log, client, cfg); err != nil {
			return err
		}
	}
	if o.speaker {
		if err := startSpeaker(ctx, log, client, cfg); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func startRoutes(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg nodeConfig) error {
	routes, err := podnet.New(podnet.Config{Client: client, NodeName: cfg.NodeName, Mode: podnet.Mode(cfg.PodNetworkMode), Link: cfg.Underlay})
	if err != nil {
		return err
	}
	go func() {
		if err := routes.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("pod network routes stopped", "err", err)
		}
	}()
	return nil
}
