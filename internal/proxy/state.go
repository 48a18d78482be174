package proxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	netutils "k8s.io/utils/net"
)

// Inputs is everything the desired state depends on. Compute never modifies it.
type Inputs struct {
	Services       []*v1.Service
	EndpointSlices []*discovery.EndpointSlice
	NodeName       string
	Zone           string
	NodeIPs        []netip.Addr
	ClusterCIDR    netip.Prefix
	MasqueradeMark uint32
}

// State is the desired state of the node's Service proxy: a plain value,
// computed by Compute and rendered by render.
type State struct {
	NodeIPs        []netip.Addr
	ClusterCIDR    netip.Prefix
	MasqueradeMark uint32
	// ServicePorts is sorted by Name.
	ServicePorts []ServicePort
	// HealthChecks lists healthCheckNodePort servers (eTP Local Services).
	HealthChecks []HealthCheck
	// Problems are Services (or parts of them) that cannot be programmed; the
	// rest of the Service, and every other Service, is still programmed.
	Problems []Problem
}

// ServicePort is one port of one Service, with the endpoints chosen for it.
type ServicePort struct {
	Service  types.NamespacedName
	PortName string
	// Protocol in nft spelling: tcp, udp or sctp.
	Protocol  string
	ClusterIP netip.Addr
	Port      uint16
	NodePort  uint16
	// ExternalIPs are spec.externalIPs; LoadBalancerIPs are
	// status.loadBalancer.ingress IPs (ipMode VIP).
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// Firewalled means spec.loadBalancerSourceRanges restricts who may
	// reach LoadBalancerIPs: only sources in SourceRanges (masked, in the
	// Service's order), everyone else is dropped. Firewalled with no
	// SourceRanges (every entry invalid) drops every source. NodePorts,
	// externalIPs and the ClusterIP are never restricted, as in kube-proxy.
	Firewalled   bool
	SourceRanges []netip.Prefix
	// AffinityTimeout > 0 means sessionAffinity ClientIP.
	AffinityTimeout     time.Duration
	InternalPolicyLocal bool
	ExternalPolicyLocal bool
	// ClusterEndpoints are usable endpoints on any node after topology
	// filtering; LocalEndpoints the usable ones on this node. Each is the
	// ready endpoints, or the serving+terminating ones if none is ready.
	ClusterEndpoints []Endpoint
	LocalEndpoints   []Endpoint
}

// Name is namespace/name/protocol/port, unique per node; it names chains.
func (sp *ServicePort) Name() string {
	return sp.Service.Namespace + "/" + sp.Service.Name + "/" + sp.Protocol + "/" + strconv.Itoa(int(sp.Port))
}

// ExternallyAccessible reports whether the port has external destinations
// (NodePort, externalIPs, LoadBalancer IPs).
func (sp *ServicePort) ExternallyAccessible() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// InternalEndpoints serve ClusterIP traffic.
func (sp *ServicePort) InternalEndpoints() []Endpoint {
	if sp.InternalPolicyLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// ExternalEndpoints serve NodePort, externalIP and LoadBalancer traffic.
func (sp *ServicePort) ExternalEndpoints() []Endpoint {
	if sp.ExternalPolicyLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// HasEndpoints reports whether the port has a usable endpoint anywhere.
func (sp *ServicePort) HasEndpoints() bool {
	return len(sp.ClusterEndpoints) > 0 || len(sp.LocalEndpoints) > 0
}

// Endpoint is one backend address of a ServicePort.
type Endpoint struct {
	IP    netip.Addr
	Port  uint16
	Local bool
}

func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// HealthCheck is one healthCheckNodePort server.
type HealthCheck struct {
	Service        types.NamespacedName
	Port           uint16
	LocalEndpoints int
}

// Problem is a reason a Service (or part of it) is not programmed.
type Problem struct {
	Service types.NamespacedName
	Reason  string
	Message string
}

// Compute is the pure desired-state function.
func Compute(in Inputs) *State { return ComputeWith(in, nil) }

// Memo carries endpoint selections from one ComputeWith to the next: a
// Service whose object and EndpointSlices are the same pointers as last
// time (informer caches replace an object on every change) reuses them,
// which is most of Compute's cost at 10k Services. The zero value is ready.
type Memo struct {
	nodeName, zone string
	services       map[types.NamespacedName]*memoEntry
}

type memoEntry struct {
	svc    *v1.Service
	slices []*discovery.EndpointSlice
	// ports[i] are the cluster and local endpoints of spec.ports[i].
	ports map[int][2][]Endpoint
}

// ComputeWith is Compute with a Memo (nil for none); the result is the same.
func ComputeWith(in Inputs, memo *Memo) *State {
	var prev map[types.NamespacedName]*memoEntry
	if memo != nil {
		if memo.nodeName == in.NodeName && memo.zone == in.Zone {
			prev = memo.services
		}
		memo.nodeName, memo.zone = in.NodeName, in.Zone
		memo.services = make(map[types.NamespacedName]*memoEntry, len(in.Services))
	}
	st := computeWith(in, prev, memo)
	return st
}

func computeWith(in Inputs, prev map[types.NamespacedName]*memoEntry, memo *Memo) *State {
	st := &State{NodeIPs: in.NodeIPs, ClusterCIDR: in.ClusterCIDR, MasqueradeMark: in.MasqueradeMark}

	slicesBySvc := map[types.NamespacedName][]*discovery.EndpointSlice{}
	for _, s := range in.EndpointSlices {
		name := s.Labels[discovery.LabelServiceName]
		if name == "" || s.AddressType != discovery.AddressTypeIPv4 {
			continue
		}
		key := types.NamespacedName{Namespace: s.Namespace, Name: name}
		slicesBySvc[key] = append(slicesBySvc[key], s)
	}

	// Older Services first, so when two claim the same frontend the one that
	// had it first keeps it and the newcomer gets the Warning.
	svcs := slices.Clone(in.Services)
	slices.SortFunc(svcs, func(a, b *v1.Service) int {
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	c := computer{in: in, st: st, ipOwner: map[string]types.NamespacedName{}, nodePortOwner: map[string]types.NamespacedName{}}
	for _, svc := range svcs {
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		epSlices := slicesBySvc[key]
		// Listers return objects in no particular order; a fixed order keeps
		// the result deterministic and the memo comparable.
		slices.SortFunc(epSlices, func(a, b *discovery.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
		c.cur = nil
		if memo != nil {
			c.cur = &memoEntry{svc: svc, slices: epSlices, ports: map[int][2][]Endpoint{}}
			if old := prev[key]; old != nil && old.svc == svc && slices.Equal(old.slices, epSlices) {
				c.cur.ports = old.ports
			}
			memo.services[key] = c.cur
		}
		c.service(svc, epSlices)
	}
	slices.SortFunc(st.ServicePorts, func(a, b ServicePort) int { return strings.Compare(a.Name(), b.Name()) })
	slices.SortFunc(st.HealthChecks, func(a, b HealthCheck) int { return cmp.Compare(a.Port, b.Port) })
	return st
}

type computer struct {
	in            Inputs
	st            *State
	cur           *memoEntry                      // of the Service being computed; nil without a Memo
	ipOwner       map[string]types.NamespacedName // "ip/proto/port"
	nodePortOwner map[string]types.NamespacedName // "proto/port"
}

func (c *computer) problem(svc types.NamespacedName, reason, format string, args ...any) {
	c.st.Problems = append(c.st.Problems, Problem{Service: svc, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// claim records owner as the user of key; false if another Service has it.
func (c *computer) claim(owners map[string]types.NamespacedName, key string, owner types.NamespacedName) bool {
	if o, ok := owners[key]; ok && o != owner {
		return false
	}
	owners[key] = owner
	return true
}

func (c *computer) service(svc *v1.Service, epSlices []*discovery.EndpointSlice) {
	name := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	// Headless and ExternalName Services are DNS-only.
	if svc.Spec.Type == v1.ServiceTypeExternalName || svc.Spec.ClusterIP == v1.ClusterIPNone || svc.Spec.ClusterIP == "" {
		return
	}
	clusterIP, ok := ipv4ClusterIP(svc)
	if !ok {
		c.problem(name, "UnsupportedIPFamily", "Service has no IPv4 ClusterIP; knet's proxy is IPv4-only, so this Service is not programmed on node %s", c.in.NodeName)
		return
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		secs := int32(v1.DefaultClientIPServiceAffinitySeconds)
		if cfg := svc.Spec.SessionAffinityConfig; cfg != nil && cfg.ClientIP != nil && cfg.ClientIP.TimeoutSeconds != nil {
			secs = *cfg.ClientIP.TimeoutSeconds
		}
		affinity = time.Duration(secs) * time.Second
	}
	externalIPs := c.parseIPs(name, "externalIP", svc.Spec.ExternalIPs)
	var lbIPs []netip.Addr
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		var raw []string
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer delivers to the node, not to the VIP.
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy) {
				continue
			}
			raw = append(raw, ing.IP)
		}
		lbIPs = c.parseIPs(name, "LoadBalancer ingress IP", raw)
	}
	firewalled, sourceRanges := c.sourceRanges(name, svc.Spec.LoadBalancerSourceRanges)
	eTPLocal := svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal &&
		(svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer)
	iTPLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal

	localIPs := map[netip.Addr]bool{}
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		proto, ok := nftProtocol(port.Protocol)
		if !ok {
			c.problem(name, "UnsupportedProtocol", "port %q: protocol %q is not supported (TCP, UDP and SCTP are); the other ports are still programmed", port.Name, port.Protocol)
			continue
		}
		if port.Port <= 0 || port.Port > 65535 || port.NodePort < 0 || port.NodePort > 65535 {
			c.problem(name, "InvalidPort", "port %q: port %d / nodePort %d out of range; the other ports are still programmed", port.Name, port.Port, port.NodePort)
			continue
		}
		sp := ServicePort{
			Service:             name,
			PortName:            port.Name,
			Protocol:            proto,
			ClusterIP:           clusterIP,
			Port:                uint16(port.Port),
			AffinityTimeout:     affinity,
			InternalPolicyLocal: iTPLocal,
			ExternalPolicyLocal: eTPLocal,
		}
		portKey := proto + "/" + strconv.Itoa(int(port.Port))
		if !c.claim(c.ipOwner, clusterIP.String()+"/"+portKey, name) {
			c.problem(name, "FrontendConflict", "ClusterIP %s port %s is already used by Service %s", clusterIP, portKey, c.ipOwner[clusterIP.String()+"/"+portKey])
			continue
		}
		sp.ExternalIPs = c.claimAll(name, externalIPs, portKey, "externalIP")
		sp.LoadBalancerIPs = c.claimAll(name, lbIPs, portKey, "LoadBalancer IP")
		if len(sp.LoadBalancerIPs) > 0 {
			sp.Firewalled, sp.SourceRanges = firewalled, sourceRanges
		}
		if port.NodePort != 0 && svc.Spec.Type != v1.ServiceTypeClusterIP {
			npKey := proto + "/" + strconv.Itoa(int(port.NodePort))
			if c.claim(c.nodePortOwner, npKey, name) {
				sp.NodePort = uint16(port.NodePort)
			} else {
				c.problem(name, "FrontendConflict", "nodePort %s is already used by Service %s; the port is served on its other addresses", npKey, c.nodePortOwner[npKey])
			}
		}
		sp.ClusterEndpoints, sp.LocalEndpoints = c.endpoints(epSlices, i, port)
		for _, ep := range sp.LocalEndpoints {
			localIPs[ep.IP] = true
		}
		c.st.ServicePorts = append(c.st.ServicePorts, sp)
	}
	if eTPLocal && svc.Spec.HealthCheckNodePort > 0 && svc.Spec.HealthCheckNodePort <= 65535 {
		c.st.HealthChecks = append(c.st.HealthChecks, HealthCheck{Service: name, Port: uint16(svc.Spec.HealthCheckNodePort), LocalEndpoints: len(localIPs)})
	}
}

// endpoints selects the endpoints of spec.ports[i], or reuses the memo's.
func (c *computer) endpoints(epSlices []*discovery.EndpointSlice, i int, port *v1.ServicePort) (cluster, local []Endpoint) {
	if c.cur != nil {
		if eps, ok := c.cur.ports[i]; ok {
			return eps[0], eps[1]
		}
	}
	cluster, local = selectEndpoints(candidates(epSlices, port), c.in.NodeName, c.in.Zone)
	if c.cur != nil {
		c.cur.ports[i] = [2][]Endpoint{cluster, local}
	}
	return cluster, local
}

func (c *computer) claimAll(name types.NamespacedName, ips []netip.Addr, portKey, what string) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		key := ip.String() + "/" + portKey
		if !c.claim(c.ipOwner, key, name) {
			c.problem(name, "FrontendConflict", "%s %s port %s is already used by Service %s", what, ip, portKey, c.ipOwner[key])
			continue
		}
		out = append(out, ip)
	}
	return out
}

func (c *computer) parseIPs(name types.NamespacedName, what string, raw []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range raw {
		a, err := netip.ParseAddr(s)
		if err != nil {
			c.problem(name, "InvalidIP", "%s %q is not an IP address; it is ignored", what, s)
			continue
		}
		if !a.Is4() {
			continue // an IPv6 frontend of a dual-stack Service: another proxy's job
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// sourceRanges parses spec.loadBalancerSourceRanges as kube-proxy does:
// entries are trimmed (API validation lets whitespace through), host bits are
// ignored, IPv6 ranges belong to the IPv6 proxy, and a zero-length prefix
// (0.0.0.0/0) means "allow all", the same as no field. Where kube-proxy
// silently skips an unparsable entry, knet also warns, and if nothing valid
// is left from a non-empty field it fails closed: a typo in a firewall must
// not open the Service to everyone.
func (c *computer) sourceRanges(name types.NamespacedName, raw []string) (firewalled bool, out []netip.Prefix) {
	if len(raw) == 0 {
		return false, nil
	}
	invalid, ipv6 := 0, 0
	for _, s := range raw {
		p, err := parseCIDRSloppy(strings.TrimSpace(s))
		if err != nil {
			invalid++
			c.problem(name, "InvalidSourceRange", "loadBalancerSourceRanges entry %q is not a CIDR like 192.0.2.0/24; it is ignored (fix or remove it)", s)
			continue
		}
		if !p.Addr().Is4() {
			ipv6++
			continue
		}
		if p.Bits() == 0 {
			return false, nil
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 && invalid == 0 {
		// Only IPv6 ranges: kube-proxy leaves the IPv4 side unrestricted.
		return false, nil
	}
	if len(out) == 0 {
		c.problem(name, "InvalidSourceRange", "no valid IPv4 entry in loadBalancerSourceRanges, so its LoadBalancer IPs accept no client until the field is fixed")
	}
	return true, out
}

// parseCIDRSloppy parses a CIDR the way the API server's legacy validation
// accepts it: IPv4 octets may carry leading zeros ("010.0.0.0/8" is
// 10.0.0.0/8), and host bits are ignored.
func parseCIDRSloppy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	ip, ipNet, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	ones, _ := ipNet.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), nil
}

func ipv4ClusterIP(svc *v1.Service) (netip.Addr, bool) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func nftProtocol(p v1.Protocol) (string, bool) {
	switch p {
	case v1.ProtocolTCP, "":
		return "tcp", true
	case v1.ProtocolUDP:
		return "udp", true
	case v1.ProtocolSCTP:
		return "sctp", true
	}
	return "", false
}

// candidate is an endpoint of one Service port before selection.
type candidate struct {
	ip                   netip.Addr
	port                 uint16
	nodeName             string
	ready, serving, term bool
	forZones, forNodes   []string
}

// candidates collects the endpoints of port from the Service's slices. The
// EndpointSlice controller already resolved named targetPorts: a slice port
// carries the Service port's name and the resolved number, so matching is by
// name and protocol. An endpoint listed twice (slices mid-update) keeps its
// best condition.
func candidates(epSlices []*discovery.EndpointSlice, port *v1.ServicePort) []candidate {
	var out []candidate
	index := map[netip.Addr]int{}
	for _, s := range epSlices {
		var num int32 = -1
		for _, p := range s.Ports {
			pname := ""
			if p.Name != nil {
				pname = *p.Name
			}
			proto := v1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if pname == port.Name && proto == cmp.Or(port.Protocol, v1.ProtocolTCP) && p.Port != nil {
				num = *p.Port
				break
			}
		}
		if num <= 0 || num > 65535 {
			continue
		}
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			if len(ep.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil || !ip.Is4() {
				continue
			}
			cd := candidate{ip: ip, port: uint16(num)}
			cd.ready = ep.Conditions.Ready == nil || *ep.Conditions.Ready
			cd.serving = cd.ready
			if ep.Conditions.Serving != nil {
				cd.serving = *ep.Conditions.Serving
			}
			cd.term = ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			if ep.NodeName != nil {
				cd.nodeName = *ep.NodeName
			}
			if ep.Hints != nil {
				for _, z := range ep.Hints.ForZones {
					cd.forZones = append(cd.forZones, z.Name)
				}
				for _, n := range ep.Hints.ForNodes {
					cd.forNodes = append(cd.forNodes, n.Name)
				}
			}
			if j, dup := index[ip]; dup {
				if rank(cd) > rank(out[j]) {
					out[j] = cd
				}
				continue
			}
			index[ip] = len(out)
			out = append(out, cd)
		}
	}
	slices.SortFunc(out, func(a, b candidate) int { return a.ip.Compare(b.ip) })
	return out
}

func rank(c candidate) int {
	switch {
	case c.ready:
		return 2
	case c.serving:
		return 1
	}
	return 0
}

// selectEndpoints applies kube-proxy's rules: ready endpoints, narrowed by
// topology hints; if none is ready anywhere, the serving+terminating ones so
// connections drain instead of failing. Local endpoints follow the same
// ready-else-terminating rule, without topology.
func selectEndpoints(cands []candidate, nodeName, zone string) (cluster, local []Endpoint) {
	var ready, fallback, localReady, localFallback []candidate
	for _, c := range cands {
		isLocal := c.nodeName != "" && c.nodeName == nodeName
		switch {
		case c.ready:
			ready = append(ready, c)
			if isLocal {
				localReady = append(localReady, c)
			}
		case c.serving && c.term:
			fallback = append(fallback, c)
			if isLocal {
				localFallback = append(localFallback, c)
			}
		}
	}
	if len(ready) > 0 {
		cluster = toEndpoints(topology(ready, nodeName, zone), nodeName)
	} else {
		cluster = toEndpoints(fallback, nodeName)
	}
	if len(localReady) > 0 {
		local = toEndpoints(localReady, nodeName)
	} else {
		local = toEndpoints(localFallback, nodeName)
	}
	return cluster, local
}

// topology narrows ready endpoints by hints: node hints (trafficDistribution
// PreferSameNode) first, then zone hints (PreferClose / PreferSameZone /
// topology-mode Auto). Hints are used only when every ready endpoint has
// them (a partly hinted set means the controller is mid-update) and at least
// one fits; otherwise all ready endpoints are used.
func topology(ready []candidate, nodeName, zone string) []candidate {
	pick := func(hints func(candidate) []string, want string) []candidate {
		if want == "" {
			return nil
		}
		var out []candidate
		for _, c := range ready {
			h := hints(c)
			if len(h) == 0 {
				return nil
			}
			if slices.Contains(h, want) {
				out = append(out, c)
			}
		}
		return out
	}
	if sel := pick(func(c candidate) []string { return c.forNodes }, nodeName); len(sel) > 0 {
		return sel
	}
	if sel := pick(func(c candidate) []string { return c.forZones }, zone); len(sel) > 0 {
		return sel
	}
	return ready
}

func toEndpoints(cs []candidate, nodeName string) []Endpoint {
	if len(cs) == 0 {
		return nil
	}
	out := make([]Endpoint, len(cs))
	for i, c := range cs {
		out[i] = Endpoint{IP: c.ip, Port: c.port, Local: c.nodeName != "" && c.nodeName == nodeName}
	}
	return out
}

// equal reports whether two ServicePorts render the same rules.
func (sp *ServicePort) equal(o *ServicePort) bool {
	return sp.Service == o.Service && sp.PortName == o.PortName && sp.Protocol == o.Protocol &&
		sp.ClusterIP == o.ClusterIP && sp.Port == o.Port && sp.NodePort == o.NodePort &&
		sp.AffinityTimeout == o.AffinityTimeout && sp.InternalPolicyLocal == o.InternalPolicyLocal &&
		sp.ExternalPolicyLocal == o.ExternalPolicyLocal && sp.Firewalled == o.Firewalled &&
		slices.Equal(sp.ExternalIPs, o.ExternalIPs) && slices.Equal(sp.LoadBalancerIPs, o.LoadBalancerIPs) &&
		slices.Equal(sp.SourceRanges, o.SourceRanges) &&
		slices.Equal(sp.ClusterEndpoints, o.ClusterEndpoints) && slices.Equal(sp.LocalEndpoints, o.LocalEndpoints)
}
