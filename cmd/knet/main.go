// Command knet is the Kubernetes networking layer in one binary: `knet up` runs a whole cluster
// on this machine; the same binary is the node agent, the CNI plugin and the pods' helpers.
// This package only parses flags and wires the internal packages together.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"knet/internal/cni"
	"knet/internal/sandbox"
)

func main() {
	// Entry points that are not CLI subcommands: the CNI plugin is invoked by the runtime with
	// CNI_COMMAND set; the sandbox helpers are re-executed by the kubelet's process runtime.
	if os.Getenv("CNI_COMMAND") != "" {
		cni.PluginMain()
		return
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "sandbox-holder":
			os.Exit(sandbox.HolderMain(os.Args[2:]))
		case "container-init":
			os.Exit(sandbox.ContainerInitMain(os.Args[2:]))
		case "kubectl":
			os.Exit(runKubectl(os.Args[2:]))
		}
	}
	root := &cobra.Command{
		Use:           "knet",
		Short:         "knet: Kubernetes networking, and a whole cluster on one machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(upCommand(), downCommand(), statusCommand(), kubeconfigCommand(),
		daemonCommand(), nodeCommand(), agentCommand(), pauseCommand(), dnsCommand(), ingressCommand(), serviceCommand(),
		&cobra.Command{Use: "kubectl", Short: "Run the embedded kubectl against the cluster (KUBECONFIG defaults to the cluster's)", DisableFlagParsing: true})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "knet:", err)
		os.Exit(1)
	}
}
