// Command helper is a minimal sandbox.Config.HelperBinary: it serves only the
// `sandbox-holder` and `container-init` subcommands. Every pod holder and
// every container start runs the helper, and a Go binary runs the init code of
// everything it links before main; the full knet binary links Kubernetes, so
// a holder of it costs far more memory and start time than one of this.
//
//	go build -o /usr/local/lib/knet/knet-sandbox-helper knet/internal/sandbox/helper
package main

import (
	"fmt"
	"os"

	"knet/internal/sandbox"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "sandbox-holder":
			os.Exit(sandbox.HolderMain(os.Args[2:]))
		case "container-init":
			os.Exit(sandbox.ContainerInitMain(os.Args[2:]))
		}
	}
	fmt.Fprintln(os.Stderr, "usage: knet-sandbox-helper sandbox-holder|container-init <spec.json>\nknet's kubelet runs this; it is not meant to be run by hand.")
	os.Exit(2)
}
