// Package kubelet is knet's kubelet: it registers a Node, runs the pods the
// scheduler binds to it as host processes inside per-pod sandboxes (network,
// UTS and mount namespaces from package sandbox), wires pod networking through
// the node's CNI plugin with libcni exactly as containerd does, reports pod and
// node status, and serves the kubelet API (logs, exec, attach, port-forward)
// on :10250 over mutual TLS.
//
// It builds on virtual-kubelet: virtual-kubelet owns the informers, the pod
// sync queues, node registration and lease renewal; this package owns what a
// container runtime and the kubelet's pod workers own (process lifecycle,
// restarts with back-off, probes, hooks, graceful termination, status).
//
// It never touches the host outside StateDir, the pod sandboxes it created and
// the CNI plugin invocations it makes; volumes (package volume) and the
// generated /etc files (package podfiles) are owned by its subpackages.
package kubelet
