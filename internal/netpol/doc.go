// Package netpol enforces Kubernetes NetworkPolicy (networking.k8s.io/v1) for
// the pods of the node it runs on.
//
// It owns exactly one nftables table, "ip knet-netpol", in the network
// namespace it runs in (the node's). It reads Pods, Namespaces and
// NetworkPolicies through client-go informers and never writes to the API. It
// never touches another nftables table, links, routes, sysctls or conntrack.
//
// The package is split the way kube-network-policies splits it: policy logic
// apart from the dataplane.
//
//	Evaluate(...) Verdict    pure: the API's semantics for one packet, used by tests as the reference
//	Compile(Inputs) *State   pure: policies + pods + namespaces → per-local-pod groups of allowed peers
//	render(*State) *ruleset  pure: the complete desired table
//	plan(applied, next, tx)  pure: the transaction that moves the kernel from applied to next
//
// and one impure step that runs the transaction atomically, so a failed apply
// leaves the previous rules in force.
//
// Packet path: the base chain "forward" (hook forward, priority filter) sees
// pod traffic after Service DNAT (prerouting, priority dstnat) and, because
// br_netfilter is on, also pod-to-pod traffic bridged on knet0. It accepts
// established and related packets first (replies of allowed connections),
// then traffic from the node's own addresses and the pod gateway, then looks
// the source up in the verdict map @egress-pods and the destination in
// @ingress-pods. A local pod that policies select maps to the chain of its
// policy group: the pods selected by the same policies (and, for ingress,
// with the same named-port numbers) share one chain, whose allowed traffic is
// two sets: peers allowed on every port, and disjoint
// peer-range . protocol . port-range boxes. A packet therefore costs two map
// lookups and at most four set lookups, however many policies exist.
// Traffic between the node and its own pods uses the input and output hooks
// and is never policed; hostNetwork pods are not policed either.
//
// Only IPv4 is enforced.
package netpol
