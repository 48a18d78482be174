package podfiles

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const managedPrefix = "# Kubernetes-managed hosts file.\n" +
	"127.0.0.1\tlocalhost\n" +
	"::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"fe00::0\tip6-localnet\n" +
	"fe00::0\tip6-mcastprefix\n" +
	"fe00::1\tip6-allnodes\n" +
	"fe00::2\tip6-allrouters\n"

func TestHosts(t *testing.T) {
	aliases := []corev1.HostAlias{
		{IP: "192.0.2.10", Hostnames: []string{"foo.local", "bar.local"}},
		{IP: "192.0.2.11", Hostnames: []string{"baz"}},
	}
	tests := []struct {
		name      string
		spec      corev1.PodSpec
		podIPs    []string
		hostHosts string
		want      string
	}{{
		name:   "pod name as hostname, dual stack",
		podIPs: []string{"10.244.1.5", "fd00::5"},
		want:   managedPrefix + "10.244.1.5\tweb-0\nfd00::5\tweb-0\n",
	}, {
		name:   "hostname and subdomain",
		spec:   corev1.PodSpec{Hostname: "db", Subdomain: "backend"},
		podIPs: []string{"10.244.1.5"},
		want:   managedPrefix + "10.244.1.5\tdb.backend.shop.svc.cluster.local\tdb\n",
	}, {
		name:   "hostAliases",
		spec:   corev1.PodSpec{HostAliases: aliases},
		podIPs: []string{"10.244.1.5"},
		want: managedPrefix + "10.244.1.5\tweb-0\n\n# Entries added by HostAliases.\n" +
			"192.0.2.10\tfoo.local\tbar.local\n192.0.2.11\tbaz\n",
	}, {
		name:      "hostNetwork keeps the node's file",
		spec:      corev1.PodSpec{HostNetwork: true, HostAliases: aliases[1:]},
		hostHosts: "127.0.0.1 localhost\n192.0.2.1 node-1\n",
		want: "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.1 node-1\n" +
			"\n# Entries added by HostAliases.\n192.0.2.11\tbaz\n",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"}, Spec: tc.spec}
			got := string(Hosts(pod, tc.podIPs, []byte(tc.hostHosts), "cluster.local"))
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestHostname(t *testing.T) {
	long := strings.Repeat("a", 60) + "-.-bcd" // cut at 63 leaves trailing "-.-"
	tests := []struct {
		name         string
		podName      string
		spec         corev1.PodSpec
		wantHostname string
		wantFQDN     string
		wantErr      string
	}{
		{name: "pod name", podName: "web-0", wantHostname: "web-0"},
		{name: "spec.hostname wins", podName: "web-0", spec: corev1.PodSpec{Hostname: "db"}, wantHostname: "db"},
		{name: "truncated to 63 without trailing separators", podName: long, wantHostname: strings.Repeat("a", 60)},
		{name: "subdomain gives an FQDN", podName: "web-0", spec: corev1.PodSpec{Subdomain: "backend"},
			wantHostname: "web-0", wantFQDN: "web-0.backend.shop.svc.cluster.local"},
		{name: "setHostnameAsFQDN", podName: "web-0", spec: corev1.PodSpec{Subdomain: "backend", SetHostnameAsFQDN: ptr(true)},
			wantHostname: "web-0.backend.shop.svc.cluster.local", wantFQDN: "web-0.backend.shop.svc.cluster.local"},
		{name: "setHostnameAsFQDN without subdomain is the short name", podName: "web-0", spec: corev1.PodSpec{SetHostnameAsFQDN: ptr(true)},
			wantHostname: "web-0"},
		{name: "hostnameOverride replaces everything", podName: "web-0", spec: corev1.PodSpec{Hostname: "db", Subdomain: "backend", HostnameOverride: ptr("my.host")},
			wantHostname: "my.host"},
		{name: "FQDN over 64 characters is refused", podName: strings.Repeat("p", 40), spec: corev1.PodSpec{Subdomain: "backend", SetHostnameAsFQDN: ptr(true)},
			wantHostname: strings.Repeat("p", 40), wantFQDN: strings.Repeat("p", 40) + ".backend.shop.svc.cluster.local", wantErr: "more than the 64"},
		{name: "invalid hostname", podName: "web-0", spec: corev1.PodSpec{Hostname: "Not_Valid"}, wantHostname: "Not_Valid", wantErr: "not a valid DNS label"},
		{name: "invalid subdomain", podName: "web-0", spec: corev1.PodSpec{Subdomain: "a.b"}, wantHostname: "web-0",
			wantFQDN: "web-0.a.b.shop.svc.cluster.local", wantErr: "subdomain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tc.podName, Namespace: "shop"}, Spec: tc.spec}
			h, fqdn := Hostname(pod, "cluster.local")
			if h != tc.wantHostname || fqdn != tc.wantFQDN {
				t.Errorf("Hostname = %q, %q; want %q, %q", h, fqdn, tc.wantHostname, tc.wantFQDN)
			}
			err := CheckHostname(pod, "cluster.local")
			if tc.wantErr == "" && err != nil {
				t.Errorf("CheckHostname: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("CheckHostname = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}
