package dns

import (
	"net/netip"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// snapshot is an immutable view of the cluster's DNS data, built from the
// informer caches in one pass and swapped in atomically, so queries read it
// without locks. A change in the API builds a new snapshot; nothing in an
// existing one is ever modified.
type snapshot struct {
	gen      uint64 // identifies the snapshot; cached answers of older ones are stale
	zone     string // the cluster domain, lowercase FQDN ("cluster.local.")
	ttl      uint32
	serial   uint32                  // SOA serial: Unix time of the build, as CoreDNS uses its last-change time
	services map[string]*serviceInfo // by "name.namespace"
	// namespaces that exist: CoreDNS answers NXDOMAIN for any name in a
	// namespace the API does not have.
	namespaces map[string]bool
	reverse    map[netip.Addr][]string // IP -> PTR targets (FQDNs)
	dnsAddrs   []netip.Addr            // ClusterIPs of kube-system/kube-dns, the zone's name server
}

// serviceInfo is the slim form of a Service and its EndpointSlices: only what
// DNS answers need, converted once at build time.
type serviceInfo struct {
	fqdn         string // name.namespace.svc.<zone>. (PTR targets)
	rel          string // name.namespace.svc. (SRV targets end in the zone as the client spelled it)
	headless     bool
	externalName string // FQDN target of an ExternalName Service, else ""
	clusterIPs   []netip.Addr
	ports        []portInfo
	endpoints    []endpointInfo // ready endpoints only, in EndpointSlice order
}

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

// buildSnapshot computes the DNS view of the given objects. It is a pure
// function: same objects, same snapshot (except gen and serial).
func buildSnapshot(zone string, ttl uint32, gen uint64, serial uint32, namespaces []*v1.Namespace, services []*v1.Service, slices []*discoveryv1.EndpointSlice) *snapshot {
	s := &snapshot{
		gen:        gen,
		zone:       zone,
		ttl:        ttl,
		serial:     serial,
		services:   make(map[string]*serviceInfo, len(services)),
		namespaces: make(map[string]bool, len(namespaces)),
		reverse:    make(map[netip.Addr][]string),
	}
	for _, ns := range namespaces {
		s.namespaces[ns.Name] = true
	}
	for _, svc := range services {
		rel := svc.Name + "." + svc.Namespace + ".svc."
		info := &serviceInfo{fqdn: rel + zone, rel: rel}
		switch {
		case svc.Spec.Type == v1.ServiceTypeExternalName:
			target := strings.ToLower(svc.Spec.ExternalName)
			// CoreDNS answers ExternalName only when it is a name: an IP
			// there is invalid per the API and gets no record.
			if _, err := netip.ParseAddr(target); err == nil || target == "" {
				continue
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
			for _, ip := range ips {
				if a, err := netip.ParseAddr(ip); err == nil {
					info.clusterIPs = append(info.clusterIPs, a.Unmap())
				}
			}
		}
		for _, p := range svc.Spec.Ports {
			info.ports = append(info.ports, portInfo{name: strings.ToLower(p.Name), proto: protoName(p.Protocol), port: p.Port})
		}
		if len(info.ports) == 0 {
			info.ports = []portInfo{{port: -1}}
		}
		s.services[svc.Name+"."+svc.Namespace] = info
		if svc.Namespace == "kube-system" && svc.Name == "kube-dns" {
			s.dnsAddrs = info.clusterIPs
		}
	}

	// Slices in a stable order, so answers do not reorder between builds.
	sorted := append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Namespace != sorted[j].Namespace {
			return sorted[i].Namespace < sorted[j].Namespace
		}
		return sorted[i].Name < sorted[j].Name
	})
	for _, es := range sorted {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		info := s.services[es.Labels[serviceNameLabel]+"."+es.Namespace]
		if info == nil || info.externalName != "" {
			continue
		}
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
			// A nil ready condition means unknown, which the API says to read
			// as ready; publishNotReadyAddresses is already folded into
			// Ready by the EndpointSlice controller.
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
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

	// PTR: a ClusterIP names its Service alone; any other IP names every
	// endpoint that carries it (as CoreDNS without ptr_hostname_only).
	keys := make([]string, 0, len(s.services))
	for k := range s.services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	clusterIPs := make(map[netip.Addr]bool)
	for _, k := range keys {
		info := s.services[k]
		for _, ip := range info.clusterIPs {
			if !clusterIPs[ip] {
				clusterIPs[ip] = true
				s.reverse[ip] = []string{info.fqdn}
			}
		}
	}
	for _, k := range keys {
		info := s.services[k]
		for _, ep := range info.endpoints {
			if clusterIPs[ep.addr] {
				continue
			}
			name := ep.hostname + "." + info.fqdn
			if !contains(s.reverse[ep.addr], name) {
				s.reverse[ep.addr] = append(s.reverse[ep.addr], name)
			}
		}
	}
	return s
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
