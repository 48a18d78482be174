// Package lbipam gives LoadBalancer Services their addresses on bare metal
// and announces them on the node underlay, as MetalLB does in L2 mode.
//
// It owns three things:
//
//   - The IPAddressPool CRD (knet.dev/v1beta1, cluster-scoped; see crd.yaml).
//     Its spec is MetalLB's, so a MetalLB pool carries over by changing the
//     apiVersion to knet.dev/v1beta1 (a metadata.namespace such as
//     metallb-system is dropped by the API server, pools are cluster-wide).
//     The Controller installs the CRD if it is missing and reads pools with
//     the dynamic client.
//   - status.loadBalancer.ingress of Services of type LoadBalancer whose
//     spec.loadBalancerClass is nil or "knet.dev/lb". The Controller (one
//     active instance per cluster) allocates, keeps and releases these
//     addresses and writes nothing else but Events.
//   - Answers to ARP requests for those addresses on the node's underlay
//     link. The Speaker (one per node, inside the node's network namespace)
//     answers from a userspace AF_PACKET socket: no address is ever added to
//     the interface, so the announcement ends with the process and nothing is
//     left behind in the kernel.
//
// It never touches routes, links, addresses, nftables or conntrack; traffic
// to an announced address is delivered by the Service proxy (internal/proxy),
// which DNATs status.loadBalancer.ingress addresses on every node and also
// enforces loadBalancerSourceRanges. ElectOwner and Speaker.Owner expose which
// node answers for an address, for a proxy that wants to know.
//
// The allocation is a pure function (Allocate) of the pools (BuildPools),
// the Services and the Namespaces' labels; the Controller applies its result
// with UpdateStatus only where the status differs. The owner of an address is
// a pure function (ElectOwner) of the address and the eligible nodes:
// Ready Nodes whose speaker sent a UDP heartbeat in the last
// MissedHeartbeats intervals (and, for externalTrafficPolicy Local, that
// have a ready endpoint of the Service).
package lbipam
