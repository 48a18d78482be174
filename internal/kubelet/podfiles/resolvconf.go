// Package podfiles computes the per-pod files the kubelet writes for a pod's
// network identity: /etc/resolv.conf, /etc/hosts and the pod's hostname.
//
// It owns only the content, computed as pure functions of the Pod and the
// node's DNS settings, matching what the upstream kubelet (pkg/kubelet/network/dns
// and pkg/kubelet/kubelet_pods.go) and containerd produce. It never touches the
// filesystem, the network or the API server: the caller reads the host's files
// and writes the results where the pod sees them.
package podfiles

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Limits applied by the kubelet, from k8s.io/kubernetes/pkg/apis/core/validation
// (themselves derived from glibc's resolver).
const (
	maxDNSNameservers     = 3
	maxDNSSearchPaths     = 32
	maxDNSSearchListChars = 2048
	// Search domains longer than a DNS subdomain make glibc 2.28 abort();
	// the kubelet drops them.
	maxSearchDomainLen = 253
)

// DNSConfig is the node's DNS configuration, as given to the kubelet by
// --cluster-dns, --cluster-domain and --resolv-conf.
type DNSConfig struct {
	// ClusterDNS are the cluster DNS server IPs (kube-dns Service ClusterIPs).
	// Empty makes ClusterFirst pods fall back to Default, as the kubelet does.
	ClusterDNS []string
	// ClusterDomain is the cluster's DNS domain, e.g. "cluster.local".
	ClusterDomain string
	// HostResolvConf is the content of the node's resolv.conf. nil means the
	// kubelet runs with --resolv-conf="" (no host DNS): Default pods then get
	// "nameserver 127.0.0.1" and "search .". An empty non-nil slice is an empty file.
	HostResolvConf []byte
}

// resolver is a parsed resolv.conf: the three lines a pod's resolver reads.
type resolver struct {
	servers  []string
	searches []string
	options  []string
}

// ResolvConf returns the pod's /etc/resolv.conf for its dnsPolicy and
// dnsConfig, exactly as the kubelet computes it (GetPodDNS) and containerd
// renders it. Limits are enforced like the kubelet: at most 3 nameservers,
// 32 search domains and 2048 characters of search line; extras are dropped.
// It returns an error for a pod the API server or the kubelet would reject:
// unknown dnsPolicy, dnsPolicy None without nameservers, invalid dnsConfig, or
// an unparsable host resolv.conf.
func ResolvConf(pod *corev1.Pod, cfg DNSConfig) ([]byte, error) {
	if err := validatePodDNSConfig(pod); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	host, err := parseResolvConf(cfg.HostResolvConf)
	if err != nil {
		return nil, fmt.Errorf("parse the node's resolv.conf (fix the file given to the kubelet): %w", err)
	}

	var r resolver
	switch podDNSType(pod) {
	case corev1.DNSNone:
		// dnsConfig alone, merged below.
	case corev1.DNSClusterFirst:
		if len(cfg.ClusterDNS) > 0 {
			r = resolver{
				servers:  append([]string(nil), cfg.ClusterDNS...),
				searches: clusterSearches(pod.Namespace, cfg.ClusterDomain, host.searches),
				options:  []string{"ndots:5"},
			}
			break
		}
		// Without a cluster DNS IP the kubelet falls back to Default.
		r = hostResolver(host, cfg.HostResolvConf == nil)
	default:
		r = hostResolver(host, cfg.HostResolvConf == nil)
	}

	if dc := pod.Spec.DNSConfig; dc != nil {
		r.servers = omitDuplicates(append(r.servers, dc.Nameservers...))
		r.searches = omitDuplicates(append(r.searches, dc.Searches...))
		r.options = mergeOptions(r.options, dc.Options)
	}
	if len(r.servers) > maxDNSNameservers {
		r.servers = r.servers[:maxDNSNameservers]
	}
	r.searches = fitSearchLimits(r.searches)
	return render(r), nil
}

// podDNSType maps dnsPolicy to the resolver source, as the kubelet's
// getPodDNSType does: "" is ClusterFirst (the API default), and ClusterFirst on
// hostNetwork falls back to Default. ClusterFirstWithHostNet maps to ClusterFirst.
func podDNSType(pod *corev1.Pod) corev1.DNSPolicy {
	switch pod.Spec.DNSPolicy {
	case corev1.DNSNone:
		return corev1.DNSNone
	case corev1.DNSClusterFirstWithHostNet:
		return corev1.DNSClusterFirst
	case corev1.DNSDefault:
		return corev1.DNSDefault
	default: // ClusterFirst or "" (validated before)
		if pod.Spec.HostNetwork {
			return corev1.DNSDefault
		}
		return corev1.DNSClusterFirst
	}
}

// validatePodDNSConfig applies the API server's validation of dnsPolicy and
// dnsConfig, so a pod that bypassed it fails with the same message.
func validatePodDNSConfig(pod *corev1.Pod) error {
	switch pod.Spec.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone:
	default:
		return fmt.Errorf("unsupported dnsPolicy %q: use ClusterFirst, ClusterFirstWithHostNet, Default or None", pod.Spec.DNSPolicy)
	}
	dc := pod.Spec.DNSConfig
	if pod.Spec.DNSPolicy == corev1.DNSNone && (dc == nil || len(dc.Nameservers) == 0) {
		return fmt.Errorf("dnsPolicy None needs at least one dnsConfig.nameservers entry")
	}
	if dc == nil {
		return nil
	}
	if len(dc.Nameservers) > maxDNSNameservers {
		return fmt.Errorf("dnsConfig.nameservers: must not have more than %d nameservers", maxDNSNameservers)
	}
	for _, ns := range dc.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			return fmt.Errorf("dnsConfig.nameservers: %q is not a valid IP address", ns)
		}
	}
	if len(dc.Searches) > maxDNSSearchPaths {
		return fmt.Errorf("dnsConfig.searches: must not have more than %d search paths", maxDNSSearchPaths)
	}
	if len(strings.Join(dc.Searches, " ")) > maxDNSSearchListChars {
		return fmt.Errorf("dnsConfig.searches: must not have more than %d characters (including spaces)", maxDNSSearchListChars)
	}
	for i, o := range dc.Options {
		if o.Name == "" {
			return fmt.Errorf("dnsConfig.options[%d].name: must not be empty", i)
		}
	}
	return nil
}

// hostResolver is the Default policy's base: the node's resolv.conf, or, when
// the kubelet has none, a resolver that effectively disables lookups.
func hostResolver(host resolver, noHostConf bool) resolver {
	if noHostConf {
		return resolver{servers: []string{"127.0.0.1"}, searches: []string{"."}}
	}
	return host
}

// clusterSearches is ClusterFirst's search list: the namespace's, the
// cluster's Service domains, then the host's search domains.
func clusterSearches(namespace, clusterDomain string, hostSearches []string) []string {
	if clusterDomain == "" {
		return append([]string(nil), hostSearches...)
	}
	s := []string{namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
	return omitDuplicates(append(s, hostSearches...))
}

// fitSearchLimits drops search domains the way the kubelet's
// formDNSSearchFitsLimits does: past 32 entries, longer than 253 characters,
// then from the end until the line fits in 2048 characters.
func fitSearchLimits(searches []string) []string {
	if len(searches) > maxDNSSearchPaths {
		searches = searches[:maxDNSSearchPaths]
	}
	kept := searches[:0:0]
	for _, s := range searches {
		if len(s) <= maxSearchDomainLen {
			kept = append(kept, s)
		}
	}
	for len(kept) > 0 && len(strings.Join(kept, " ")) > maxDNSSearchListChars {
		kept = kept[:len(kept)-1]
	}
	return kept
}

// parseResolvConf parses resolv.conf like the kubelet: nameserver lines
// accumulate, the last search line wins (trailing dots trimmed, "." dropped),
// options accumulate with later values overriding earlier ones.
func parseResolvConf(content []byte) (resolver, error) {
	var r resolver
	for i, line := range strings.Split(string(content), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) < 2 {
				return resolver{}, fmt.Errorf("line %d: nameserver without an address", i+1)
			}
			r.servers = append(r.servers, fields[1])
		case "search":
			r.searches = nil
			for _, s := range fields[1:] {
				if s != "." {
					r.searches = append(r.searches, strings.TrimSuffix(s, "."))
				}
			}
		case "options":
			r.options = appendOptions(r.options, fields[1:]...)
		}
	}
	return r, nil
}

// appendOptions adds "name[:value]" options; a later option with the same
// name replaces the earlier one in place. The kubelet uses a map here (random
// order); first-seen order keeps the file stable between syncs.
func appendOptions(options []string, add ...string) []string {
	out := append([]string(nil), options...)
	for _, o := range add {
		name, _, _ := strings.Cut(o, ":")
		replaced := false
		for i, existing := range out {
			if n, _, _ := strings.Cut(existing, ":"); n == name {
				out[i], replaced = o, true
				break
			}
		}
		if !replaced {
			out = append(out, o)
		}
	}
	return out
}

// mergeOptions merges dnsConfig options into existing ones by name; the pod's win.
func mergeOptions(options []string, podOptions []corev1.PodDNSConfigOption) []string {
	add := make([]string, 0, len(podOptions))
	for _, o := range podOptions {
		if o.Value != nil && *o.Value != "" {
			add = append(add, o.Name+":"+*o.Value)
		} else {
			add = append(add, o.Name)
		}
	}
	return appendOptions(options, add...)
}

func omitDuplicates(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// render writes the resolver the way containerd does for a CRI DNSConfig.
func render(r resolver) []byte {
	var b bytes.Buffer
	if len(r.searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(r.searches, " "))
	}
	for _, s := range r.servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(r.options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(r.options, " "))
	}
	return b.Bytes()
}
