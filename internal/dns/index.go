package dns

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// snapshot is an immutable view of the cluster's DNS data, swapped in
// atomically, so queries read it without locks. Nothing in a published
// snapshot is ever modified: an API change makes a new snapshot that shares
// everything the change did not touch with the one before (persistent
// maps, see pmap), so the change costs the same in a cluster of ten or ten
// thousand Services.
type snapshot struct {
	gen    uint64 // identifies the snapshot; cached answers of older ones are stale
	zone   string // the cluster domain, lowercase FQDN ("cluster.local.")
	ttl    uint32
	serial uint32 // SOA serial: Unix time of the last change, as CoreDNS uses its last-change time
	// services by "name.namespace".
	services pmap[string, *serviceInfo, stringHash]
	// namespaces that exist: CoreDNS answers NXDOMAIN for any name in a
	// namespace the API does not have.
	namespaces pmap[string, struct{}, stringHash]
	// reverse lists, for each ClusterIP and ready endpoint IP, the keys of
	// the Services that carry it, sorted and separated by spaces; the PTR
	// targets are derived from them when asked (ptrTargets).
	reverse  pmap[netip.Addr, string, addrHash]
	dnsAddrs []netip.Addr // ClusterIPs of kube-system/kube-dns, the zone's name server
}

// serviceInfo is the slim form of a Service and its EndpointSlices: only what
// DNS answers need, converted once when either changes.
type serviceInfo struct {
	fqdn         string // name.namespace.svc.<zone>. (PTR targets)
	rel          string // name.namespace.svc. (SRV targets end in the zone as the client spelled it)
	headless     bool
	externalName string // FQDN target of an ExternalName Service, else ""
	clusterIPs   []netip.Addr
	ports        []portInfo
	endpoints    []endpointInfo // ready endpoints only, EndpointSlices in name order
}

// key is the Service's key in snapshot.services, "name.namespace", sharing
// rel's memory.
func (info *serviceInfo) key() string { return info.rel[:len(info.rel)-len(".svc.")] }

// portInfo is a named port; port -1 is CoreDNS's sentinel for "no ports",
// which keeps A answers working while giving no SRV record.
type portInfo struct {
	name  string // lowercase
	proto string // lowercase: tcp, udp, sctp
	port  int32
}

type endpointInfo struct {
	hostname string // the endpoint's hostname, or its IP with dashes
	addr     netip.Addr
	ports    []portInfo
}

// serviceNameLabel links an EndpointSlice to its Service.
const serviceNameLabel = discoveryv1.LabelServiceName

// newServiceInfo is what DNS answers for svc with its EndpointSlices
// (sorted by name), or nil when it answers nothing: an ExternalName that is
// an IP or empty.
func newServiceInfo(zone string, svc *v1.Service, slices []*discoveryv1.EndpointSlice) *serviceInfo {
	rel := svc.Name + "." + svc.Namespace + ".svc."
	info := &serviceInfo{fqdn: rel + zone, rel: rel}
	switch {
	case svc.Spec.Type == v1.ServiceTypeExternalName:
		target := strings.ToLower(svc.Spec.ExternalName)
		// CoreDNS answers ExternalName only when it is a name: an IP
		// there is invalid per the API and gets no record.
		if _, err := netip.ParseAddr(target); err == nil || target == "" {
			return nil
		}
		if !strings.HasSuffix(target, ".") {
			target += "."
		}
		info.externalName = target
	case svc.Spec.ClusterIP == v1.ClusterIPNone:
		info.headless = true
	default:
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		info.clusterIPs = make([]netip.Addr, 0, len(ips))
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				info.clusterIPs = append(info.clusterIPs, a.Unmap())
			}
		}
	}
	info.ports = make([]portInfo, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		info.ports = append(info.ports, portInfo{name: strings.ToLower(p.Name), proto: protoName(p.Protocol), port: p.Port})
	}
	if len(info.ports) == 0 {
		info.ports = []portInfo{{port: -1}}
	}
	if info.externalName != "" {
		return info
	}
	// Sized up front: a view holds many of these, and append's doubling
	// would leave a third of them unused.
	n := 0
	for _, es := range slices {
		if es.AddressType != discoveryv1.AddressTypeFQDN {
			for _, ep := range es.Endpoints {
				if ready(ep) {
					n += len(ep.Addresses)
				}
			}
		}
	}
	if n > 0 {
		info.endpoints = make([]endpointInfo, 0, n)
	}
	for _, es := range slices {
		if es.AddressType != discoveryv1.AddressTypeFQDN {
			info.addEndpoints(es)
		}
	}
	return info
}

// ready says whether DNS names an endpoint. A nil ready condition means
// unknown, which the API says to read as ready; publishNotReadyAddresses is
// already folded into Ready by the EndpointSlice controller.
func ready(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

func (info *serviceInfo) addEndpoints(es *discoveryv1.EndpointSlice) {
	var ports []portInfo
	for _, p := range es.Ports {
		pi := portInfo{port: -1}
		if p.Name != nil {
			pi.name = strings.ToLower(*p.Name)
		}
		if p.Protocol != nil {
			pi.proto = protoName(*p.Protocol)
		} else {
			pi.proto = "tcp"
		}
		if p.Port != nil {
			pi.port = *p.Port
		}
		ports = append(ports, pi)
	}
	if len(ports) == 0 {
		ports = []portInfo{{port: -1}}
	}
	for _, ep := range es.Endpoints {
		if !ready(ep) {
			continue
		}
		for _, a := range ep.Addresses {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			addr = addr.Unmap()
			host := ""
			if ep.Hostname != nil {
				host = strings.ToLower(*ep.Hostname)
			}
			if host == "" {
				host = dashedIP(addr)
			}
			info.endpoints = append(info.endpoints, endpointInfo{hostname: host, addr: addr, ports: ports})
		}
	}
}

// equal says whether a and b (either may be nil) give the same answers.
func (a *serviceInfo) equal(b *serviceInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.rel == b.rel && a.fqdn == b.fqdn && a.headless == b.headless && a.externalName == b.externalName &&
		slices.Equal(a.clusterIPs, b.clusterIPs) && slices.Equal(a.ports, b.ports) &&
		slices.EqualFunc(a.endpoints, b.endpoints, func(x, y endpointInfo) bool {
			return x.hostname == y.hostname && x.addr == y.addr && slices.Equal(x.ports, y.ports)
		})
}

// ptrTargets is what a PTR query for addr answers: a ClusterIP names its
// Service alone (the first by key, should several carry it); any other IP
// names every ready endpoint that carries it, Services in key order (as
// CoreDNS without ptr_hostname_only).
func (s *snapshot) ptrTargets(addr netip.Addr) []string {
	keys, ok := s.reverse.get(addr)
	if !ok {
		return nil
	}
	var infos []*serviceInfo
	for k := range strings.SplitSeq(keys, " ") {
		info, _ := s.services.get(k)
		if info == nil {
			continue
		}
		if slices.Contains(info.clusterIPs, addr) {
			return []string{info.fqdn}
		}
		infos = append(infos, info)
	}
	var names []string
	for _, info := range infos {
		for _, ep := range info.endpoints {
			if ep.addr != addr {
				continue
			}
			if name := ep.hostname + "." + info.fqdn; !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

func protoName(p v1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

// dashedIP is the hostname CoreDNS gives an endpoint without one:
// 10.0.0.1 -> 10-0-0-1, fd00::1 -> fd00--1, and fd00:: -> fd00--0 (a
// label may not end in a dash).
func dashedIP(a netip.Addr) string {
	s := a.String()
	if a.Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	s = strings.ReplaceAll(s, ":", "-")
	if strings.HasSuffix(s, "-") {
		s += "0"
	}
	return s
}
