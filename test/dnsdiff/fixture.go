// Package dnsdiff compares knet's cluster DNS with CoreDNS's kubernetes
// plugin answer by answer. It owns a fixture of Services and hand-made
// EndpointSlices in one API namespace (no pods needed), the list of queries
// asked about it, and the comparison of two responses. The differential test
// in this package and bench/dns use the same fixture.
//
// It only writes objects inside its own API namespace, and it sends DNS
// queries only to the addresses it is given (loopback in the test and the
// benchmark). It never touches the kernel.
package dnsdiff

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// managedBy marks the hand-made EndpointSlices, so the EndpointSlice
// controllers leave them alone.
const managedBy = "dnsdiff.knet.dev"

// Fixture is a realistic set of Services and EndpointSlices for DNS: ClusterIP
// Services with named ports, headless Services whose endpoints have hostnames,
// have none, are not ready, are IPv6 or are split over slices, and
// ExternalName Services pointing out of and into the cluster. The Services
// have no selectors, so no pods are needed and no controller adds slices.
type Fixture struct {
	Namespace string
	// Services and Slices are the objects as created: after Apply the
	// Services carry their allocated ClusterIPs.
	Services []*v1.Service
	Slices   []*discoveryv1.EndpointSlice
}

// Endpoint addresses. They are never contacted: DNS only hands them out.
// The v4 ones sit in a /24 of the default pod range that `knet up` does not
// give to nodes in small clusters.
func v4(host int) string { return fmt.Sprintf("10.244.250.%d", host) }
func v6(host int) string { return fmt.Sprintf("fd00:10:244:fa::%x", host) }

// NewFixture returns the fixture's objects for namespace ns (not created yet).
func NewFixture(ns string) *Fixture {
	f := &Fixture{Namespace: ns}
	tcp, udp, sctp := v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP
	port := func(name string, p int32, proto v1.Protocol) v1.ServicePort {
		return v1.ServicePort{Name: name, Port: p, Protocol: proto}
	}
	clusterIP := func(name string, ports ...v1.ServicePort) {
		f.Services = append(f.Services, &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, Ports: ports},
		})
	}
	headless := func(name string, ports ...v1.ServicePort) {
		f.Services = append(f.Services, &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: v1.ClusterIPNone, Ports: ports},
		})
	}
	external := func(name, target string) {
		f.Services = append(f.Services, &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: target},
		})
	}

	clusterIP("web", port("http", 80, tcp), port("https", 443, tcp))
	clusterIP("resolver", port("dns", 53, udp), port("dns-tcp", 53, tcp))
	clusterIP("api", port("", 8080, tcp))
	clusterIP("metrics", port("metrics", 9090, tcp), port("grpc", 9091, tcp), port("diameter", 3868, sctp))
	clusterIP("shared-a", port("http", 80, tcp))
	clusterIP("a-service-name-that-is-long-enough-to-matter-in-answers-0123", port("http", 80, tcp))
	headless("db", port("mysql", 3306, tcp))
	headless("cache", port("redis", 6379, tcp))
	headless("mixed", port("http", 80, tcp), port("metrics", 9100, tcp))
	headless("empty", port("http", 80, tcp))
	headless("noports")
	headless("v6", port("http", 80, tcp))
	headless("dual", port("http", 80, tcp))
	headless("multislice", port("grpc", 50051, tcp))
	headless("shared-b", port("http", 80, tcp))
	headless("notready", port("http", 80, tcp))
	external("ext", "example.com")
	external("ext-dot", "example.org.")
	external("ext-internal", "web."+ns+".svc.cluster.local")
	external("ext-missing", "nope."+ns+".svc.cluster.local")
	external("ext-self", "ext-self."+ns+".svc.cluster.local")
	external("ext-below", "x.ext-below."+ns+".svc.cluster.local")

	type ep struct {
		host  string // "" for none
		addr  string
		ready *bool // nil: unknown (read as ready)
	}
	yes, no := true, false
	slice := func(svc, name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
				discoveryv1.LabelServiceName: svc,
				discoveryv1.LabelManagedBy:   managedBy,
			}},
			AddressType: family,
			Ports:       ports,
		}
		for _, e := range eps {
			d := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
			if e.host != "" {
				d.Hostname = &e.host
			}
			es.Endpoints = append(es.Endpoints, d)
		}
		f.Slices = append(f.Slices, es)
	}
	esPort := func(name string, p int32, proto v1.Protocol) discoveryv1.EndpointPort {
		return discoveryv1.EndpointPort{Name: &name, Port: &p, Protocol: &proto}
	}
	ipv4, ipv6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6

	slice("web", "web-1", ipv4, []discoveryv1.EndpointPort{esPort("http", 8080, tcp), esPort("https", 8443, tcp)},
		ep{"web-0", v4(10), &yes}, ep{"", v4(11), &yes}, ep{"web-2", v4(12), &no})
	slice("resolver", "resolver-1", ipv4, []discoveryv1.EndpointPort{esPort("dns", 53, udp), esPort("dns-tcp", 53, tcp)},
		ep{"", v4(20), nil})
	slice("db", "db-1", ipv4, []discoveryv1.EndpointPort{esPort("mysql", 3306, tcp)},
		ep{"db-0", v4(30), &yes}, ep{"db-1", v4(31), &yes}, ep{"db-2", v4(32), &yes})
	slice("cache", "cache-1", ipv4, []discoveryv1.EndpointPort{esPort("redis", 6379, tcp)},
		ep{"", v4(40), &yes}, ep{"", v4(41), &yes}, ep{"", v4(42), nil})
	slice("mixed", "mixed-1", ipv4, []discoveryv1.EndpointPort{esPort("http", 8080, tcp), esPort("metrics", 9100, tcp)},
		ep{"m-0", v4(50), &yes}, ep{"", v4(51), &yes}, ep{"m-2", v4(52), &no}, ep{"m-3", v4(53), nil})
	slice("noports", "noports-1", ipv4, nil,
		ep{"np-0", v4(60), &yes}, ep{"", v4(61), &yes})
	slice("v6", "v6-1", ipv6, []discoveryv1.EndpointPort{esPort("http", 80, tcp)},
		ep{"v6-0", v6(0x70), &yes}, ep{"", v6(0x71), &yes}, ep{"", "fd00:10:244:fa::", &yes})
	slice("dual", "dual-v4", ipv4, []discoveryv1.EndpointPort{esPort("http", 80, tcp)},
		ep{"d-0", v4(80), &yes}, ep{"", v4(81), &yes})
	slice("dual", "dual-v6", ipv6, []discoveryv1.EndpointPort{esPort("http", 80, tcp)},
		ep{"d-0", v6(0x80), &yes}, ep{"", v6(0x81), &yes})
	slice("multislice", "multislice-a", ipv4, []discoveryv1.EndpointPort{esPort("grpc", 50051, tcp)},
		ep{"ms-0", v4(90), &yes}, ep{"ms-1", v4(91), &yes})
	slice("multislice", "multislice-b", ipv4, []discoveryv1.EndpointPort{esPort("grpc", 50052, tcp)},
		ep{"ms-2", v4(92), &yes})
	slice("shared-a", "shared-a-1", ipv4, []discoveryv1.EndpointPort{esPort("http", 8080, tcp)},
		ep{"", v4(100), &yes})
	slice("shared-b", "shared-b-1", ipv4, []discoveryv1.EndpointPort{esPort("http", 8080, tcp)},
		ep{"shared", v4(100), &yes})
	slice("notready", "notready-1", ipv4, []discoveryv1.EndpointPort{esPort("http", 80, tcp)},
		ep{"nr-0", v4(110), &no})
	return f
}

// Apply creates the namespace and every object (deleting leftovers of an
// earlier run first) and records the allocated ClusterIPs in f.Services.
func (f *Fixture) Apply(ctx context.Context, c kubernetes.Interface) error {
	if err := f.Delete(ctx, c); err != nil {
		return err
	}
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", f.Namespace, err)
	}
	// The namespace's default ServiceAccount is not needed: no pods.
	for i, svc := range f.Services {
		created, err := c.CoreV1().Services(f.Namespace).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create Service %s/%s: %w", f.Namespace, svc.Name, err)
		}
		f.Services[i] = created
	}
	for _, es := range f.Slices {
		if _, err := c.DiscoveryV1().EndpointSlices(f.Namespace).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create EndpointSlice %s/%s: %w", f.Namespace, es.Name, err)
		}
	}
	return nil
}

// Delete removes the fixture's namespace and waits until it is gone, so a
// following Apply starts clean. A missing namespace is not an error.
func (f *Fixture) Delete(ctx context.Context, c kubernetes.Interface) error {
	err := c.CoreV1().Namespaces().Delete(ctx, f.Namespace, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", f.Namespace, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Namespaces().Get(ctx, f.Namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s still terminating (is kube-controller-manager's namespace controller running?): %w", f.Namespace, err)
	}
	return nil
}

// Service returns the fixture's Service named name (as created after Apply).
func (f *Fixture) Service(name string) (*v1.Service, error) {
	for _, s := range f.Services {
		if s.Name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("fixture has no Service %q", name)
}

// ClusterIP returns the allocated ClusterIP of Service name; it fails before
// Apply.
func (f *Fixture) ClusterIP(name string) (netip.Addr, error) {
	s, err := f.Service(name)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, errors.New("Service " + name + " has no ClusterIP yet: call Apply first")
	}
	return a, nil
}
