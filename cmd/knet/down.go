package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"knet/internal/cluster"
)

func downCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a cluster and remove every namespace, link, route, mount and process it made",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			l, err := cluster.LoadLayout(name)
			if err != nil {
				return err
			}
			if err := cluster.Teardown(l); err != nil {
				return fmt.Errorf("cluster %q: %w", name, err)
			}
			fmt.Printf("cluster %q removed\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", cluster.DefaultName, "cluster name")
	return cmd
}

func kubeconfigCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the cluster's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := cluster.LoadLayout(name); err != nil {
				return err
			}
			p := filepath.Join(cluster.StateRoot, name, "kubeconfig")
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("cluster %q has no kubeconfig yet (is `knet up --name %s` still starting?)", name, name)
			}
			fmt.Println(p)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", cluster.DefaultName, "cluster name")
	return cmd
}

func statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List the clusters on this machine",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			names := cluster.Names()
			if len(names) == 0 {
				fmt.Println("no clusters (start one with `knet up`)")
				return nil
			}
			fmt.Printf("%-12s %-9s %-6s %-16s %-15s %s\n", "NAME", "STATE", "NODES", "UNDERLAY", "PODS", "API")
			for _, n := range names {
				l, err := cluster.LoadLayout(n)
				if err != nil {
					fmt.Printf("%-12s %v\n", n, err)
					continue
				}
				state := "stopped"
				if cluster.DaemonRunning(l.Dir()) {
					state = "running"
				}
				fmt.Printf("%-12s %-9s %-6d %-16s %-15s https://127.0.0.1:%d\n", n, state, len(l.Nodes), l.Underlay, l.PodCIDR, l.APIPort)
			}
			return nil
		},
	}
}
