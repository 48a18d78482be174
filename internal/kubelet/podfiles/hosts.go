package podfiles

import (
	"bytes"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	managedHostsHeader                = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderWithHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
	// A Linux nodename holds 64 bytes; the kubelet caps a hostname at 63
	// characters and an FQDN hostname (setHostnameAsFQDN) at 64.
	hostnameMaxLen = 63
	fqdnMaxLen     = 64
)

// Hosts returns the pod's /etc/hosts as the kubelet writes it. For a pod with
// its own network namespace: the localhost and IPv6 entries, one line per pod
// IP naming the pod's hostname (and its FQDN when spec.subdomain is set), then
// the hostAliases. For a hostNetwork pod: the node's hosts file (hostHosts)
// followed by the hostAliases.
//
// The kubelet mounts this file only when the pod has at least one IP and no
// container mounts its own /etc/hosts; that choice is the caller's.
func Hosts(pod *corev1.Pod, podIPs []string, hostHosts []byte, clusterDomain string) []byte {
	var b bytes.Buffer
	if pod.Spec.HostNetwork {
		b.WriteString(managedHostsHeaderWithHostNetwork)
		b.Write(hostHosts)
		b.Write(hostAliasEntries(pod.Spec.HostAliases))
		return b.Bytes()
	}
	hostname, domain := hostnameAndDomain(pod, clusterDomain)
	b.WriteString(managedHostsHeader)
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	for _, ip := range podIPs {
		if domain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, hostname, domain, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	b.Write(hostAliasEntries(pod.Spec.HostAliases))
	return b.Bytes()
}

// hostAliasEntries writes one line per HostAlias, all its hostnames on it.
func hostAliasEntries(aliases []corev1.HostAlias) []byte {
	if len(aliases) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range aliases {
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
	return b.Bytes()
}

// Hostname returns the hostname to set in the pod's UTS namespace and, when
// spec.subdomain is set, the pod's FQDN <hostname>.<subdomain>.<ns>.svc.<domain>
// ("" otherwise). The hostname is spec.hostnameOverride if set, else
// spec.hostname, else the pod name, cut to 63 characters without a trailing
// '-' or '.'. With setHostnameAsFQDN the hostname is the FQDN.
// A hostNetwork pod shares the node's UTS namespace; the kubelet sets no
// hostname for it. Call CheckHostname first: it reports the pods the kubelet
// refuses to start.
func Hostname(pod *corev1.Pod, clusterDomain string) (hostname, fqdn string) {
	hostname, domain := hostnameAndDomain(pod, clusterDomain)
	if domain == "" {
		return hostname, ""
	}
	fqdn = hostname + "." + domain
	if pod.Spec.SetHostnameAsFQDN != nil && *pod.Spec.SetHostnameAsFQDN && len(fqdn) <= fqdnMaxLen {
		return fqdn, fqdn
	}
	return hostname, fqdn
}

// CheckHostname returns the error with which the kubelet refuses to create
// the pod's sandbox: an invalid hostname, hostnameOverride or subdomain, or a
// setHostnameAsFQDN FQDN longer than the 64 bytes a Linux nodename holds.
func CheckHostname(pod *corev1.Pod, clusterDomain string) error {
	if o := pod.Spec.HostnameOverride; o != nil {
		if msgs := validation.IsDNS1123Subdomain(*o); len(msgs) != 0 {
			return fmt.Errorf("pod hostnameOverride %q is not a valid DNS subdomain: %s", *o, strings.Join(msgs, "; "))
		}
	} else {
		if h := pod.Spec.Hostname; h != "" {
			if msgs := validation.IsDNS1123Label(h); len(msgs) != 0 {
				return fmt.Errorf("pod hostname %q is not a valid DNS label: %s", h, strings.Join(msgs, "; "))
			}
		}
		if s := pod.Spec.Subdomain; s != "" {
			if msgs := validation.IsDNS1123Label(s); len(msgs) != 0 {
				return fmt.Errorf("pod subdomain %q is not a valid DNS label: %s", s, strings.Join(msgs, "; "))
			}
		}
	}
	hostname, domain := hostnameAndDomain(pod, clusterDomain)
	if hostname == "" {
		return fmt.Errorf("pod %s/%s has no usable hostname: set spec.hostname", pod.Namespace, pod.Name)
	}
	if domain != "" && pod.Spec.SetHostnameAsFQDN != nil && *pod.Spec.SetHostnameAsFQDN {
		if fqdn := hostname + "." + domain; len(fqdn) > fqdnMaxLen {
			return fmt.Errorf("FQDN %s is %d characters, more than the %d a Linux hostname holds: shorten spec.hostname or spec.subdomain, or unset setHostnameAsFQDN",
				fqdn, len(fqdn), fqdnMaxLen)
		}
	}
	return nil
}

// hostnameAndDomain mirrors the kubelet's GeneratePodHostNameAndDomain: the
// short hostname and the domain part of the FQDN ("" without subdomain, and
// always "" with hostnameOverride, which replaces the whole name).
func hostnameAndDomain(pod *corev1.Pod, clusterDomain string) (hostname, domain string) {
	if o := pod.Spec.HostnameOverride; o != nil {
		return truncateHostname(*o), ""
	}
	hostname = pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	hostname = truncateHostname(hostname)
	if pod.Spec.Subdomain != "" {
		domain = fmt.Sprintf("%s.%s.svc.%s", pod.Spec.Subdomain, pod.Namespace, clusterDomain)
	}
	return hostname, domain
}

func truncateHostname(h string) string {
	if len(h) <= hostnameMaxLen {
		return h
	}
	return strings.TrimRight(h[:hostnameMaxLen], "-.")
}
