// Command plugin is knet's CNI plugin as a small binary ("knet-cni"): the
// same code as `knet` run with CNI_COMMAND set, without the Kubernetes
// packages the full binary links. A runtime execs the plugin for every pod
// ADD, CHECK and DEL, and a Go binary runs the init code of everything it
// links before main: the full knet binary spends 130-450 ms and 150 MB of
// memory on that per call (1171 package inits), this one under 10 ms and 8 MB.
//
//	CGO_ENABLED=0 go build -o bin/knet-cni ./internal/cni/plugin
//
// Install it in the runtime's CNI bin dir under the name "knet" (the
// conflist's plugin type).
package main

import "knet/internal/cni"

func main() { cni.PluginMain() }
