// Package proxy is knet's per-node Service proxy (the kube-proxy role).
//
// It owns exactly one nftables table, "ip knet-proxy", in the network
// namespace it runs in, and the healthCheckNodePort HTTP servers of
// Services with externalTrafficPolicy Local. It reads Services and
// discovery/v1 EndpointSlices through client-go informers and never writes to
// the API except Events. It never touches another nftables table, routes,
// links, sysctls or the conntrack entries of TCP flows; it deletes only the
// UDP conntrack entries that point at endpoints that went away.
//
// The sync is shaped in three pure-to-impure steps:
//
//	Compute(Inputs) *State           pure: Services + EndpointSlices + node → desired state
//	render(*State) *ruleset          pure: desired state → every chain, set and map element
//	plan(applied, next) Transaction  pure: the knftables transaction that moves the table
//
// and one impure step, apply, that runs the transaction atomically. Informer
// events only mark the proxier dirty.
//
// Packet path (see kube-proxy's pkg/proxy/nftables/README.md for the hooks):
// nat prerouting/output jump to "services", which looks up
// daddr . l4proto . dport in the verdict map @service-ips (ClusterIPs,
// externalIPs, LoadBalancer ingress IPs) and l4proto . dport in
// @service-nodeports (NodePorts), so the per-packet cost does not grow with
// the number of Services. Service chains pick an endpoint with a cascade of
// numgen random matches that DNAT directly; only ClientIP affinity adds a
// chain per endpoint (it records the client). Hairpin connections (a pod
// reaching itself through a Service) are found and masqueraded in
// postrouting. nft reads every chain of the table before each transaction,
// so chains are kept few: a one-Service change costs what the chain count
// costs. Service ports without usable endpoints are in
// @no-endpoint-services / @no-endpoint-nodeports, checked from the filter
// input/forward/output hooks, and are rejected (TCP reset, ICMP port
// unreachable otherwise), never silently dropped.
//
// loadBalancerSourceRanges are checked before DNAT, from filter chains on
// the prerouting and output hooks: @firewall-ips maps only the LoadBalancer
// IPs and ports of Services that set the field to that Service port's
// firewall- chain, which drops new connections from other sources. Every
// client is judged by its own address, pods and the node included, as in
// kube-proxy.
//
// NodePorts answer on Config.NodeIPs (all local addresses when NodeIPs is
// empty), never on 127.0.0.0/8: localhost NodePorts would need the
// route_localnet sysctl and a masquerade of loopback traffic, which
// kube-proxy's nftables mode also refuses to do.
package proxy
