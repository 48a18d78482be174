package main

import (
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"

	"knet/internal/cluster"
)

// runKubectl runs the embedded kubectl (as k3s does). Without KUBECONFIG or --kubeconfig it
// talks to the default cluster, or KNET_CLUSTER's.
func runKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" {
		name := os.Getenv("KNET_CLUSTER")
		if name == "" {
			name = cluster.DefaultName
		}
		os.Setenv("KUBECONFIG", filepath.Join(cluster.StateRoot, name, "kubeconfig"))
	}
	cmd := kubectlcmd.NewDefaultKubectlCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
