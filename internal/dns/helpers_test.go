package dns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/miekg/dns"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// Fixtures: the objects a user would create, not DNS structures.

type svcOpt func(*v1.Service)

func service(ns, name, clusterIP string, opts ...svcOpt) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIP},
	}
	if clusterIP != "" && clusterIP != v1.ClusterIPNone {
		s.Spec.ClusterIPs = strings.Split(clusterIP, ",")
		s.Spec.ClusterIP = s.Spec.ClusterIPs[0]
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withPort(name string, proto v1.Protocol, port int32) svcOpt {
	return func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: port})
	}
}

func externalName(ns, name, target string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: target},
	}
}

type ep struct {
	ip       string
	hostname string
	notReady bool
}

type slicePort struct {
	name  string
	proto v1.Protocol
	port  int32
}

func endpointSlice(ns, svc, name string, family discoveryv1.AddressType, ports []slicePort, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family,
	}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.port)})
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(!e.notReady)}}
		if e.hostname != "" {
			x.Hostname = ptr.To(e.hostname)
		}
		es.Endpoints = append(es.Endpoints, x)
	}
	return es
}

// clusterObjects is a small cluster with every kind of Service.
func clusterObjects() []runtime.Object {
	return []runtime.Object{
		namespace("kube-system"),
		namespace("default"),
		namespace("empty-ns"),
		service("kube-system", "kube-dns", "10.96.0.10", withPort("dns", v1.ProtocolUDP, 53), withPort("dns-tcp", v1.ProtocolTCP, 53)),
		service("default", "web", "10.96.0.20", withPort("http", v1.ProtocolTCP, 80), withPort("https", v1.ProtocolTCP, 443)),
		endpointSlice("default", "web", "web-abc", discoveryv1.AddressTypeIPv4, []slicePort{{"http", v1.ProtocolTCP, 8080}, {"https", v1.ProtocolTCP, 8443}},
			ep{ip: "10.244.1.5"}, ep{ip: "10.244.1.6", notReady: true}),
		service("default", "db", v1.ClusterIPNone, withPort("pg", v1.ProtocolTCP, 5432)),
		endpointSlice("default", "db", "db-xyz", discoveryv1.AddressTypeIPv4, []slicePort{{"pg", v1.ProtocolTCP, 5432}},
			ep{ip: "10.244.2.7", hostname: "db-0"}, ep{ip: "10.244.2.8"}, ep{ip: "10.244.2.9", notReady: true}),
		service("default", "empty", v1.ClusterIPNone, withPort("x", v1.ProtocolTCP, 1)),
		externalName("default", "ext", "example.org"),
		externalName("default", "alias", "web.default.svc.cluster.local"),
		externalName("default", "self", "self.default.svc.cluster.local"),
		externalName("default", "below", "x.below.default.svc.cluster.local"),
		service("default", "v6hl", v1.ClusterIPNone, withPort("http", v1.ProtocolTCP, 80)),
		endpointSlice("default", "v6hl", "v6hl-1", discoveryv1.AddressTypeIPv6, []slicePort{{"http", v1.ProtocolTCP, 80}},
			ep{ip: "fd00:1::"}),
		service("default", "v6", "fd00::10", withPort("http", v1.ProtocolTCP, 80)),
		service("default", "dual", "10.96.0.30,fd00::30", withPort("dns", v1.ProtocolUDP, 53)),
		service("default", "noports", "10.96.0.40"),
	}
}

// newTestServer returns a Server whose snapshot holds objs, without sockets
// or informers: the pure resolver. The namespaces of the Services exist, as
// in the API, besides any Namespace in objs.
func newTestServer(t testing.TB, cfg Config, objs ...runtime.Object) *Server {
	t.Helper()
	cfg.Source = fakeSource(fake.NewClientset())
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	nss, svcs, slices := split(objs)
	s.setSnapshot(nss, svcs, slices)
	return s
}

// split sorts objs by kind and adds a Namespace for each Service's namespace.
func split(objs []runtime.Object) ([]*v1.Namespace, []*v1.Service, []*discoveryv1.EndpointSlice) {
	var nss []*v1.Namespace
	var svcs []*v1.Service
	var slices []*discoveryv1.EndpointSlice
	seen := map[string]bool{}
	addNS := func(name string) {
		if !seen[name] {
			seen[name] = true
			nss = append(nss, namespace(name))
		}
	}
	for _, o := range objs {
		switch x := o.(type) {
		case *v1.Namespace:
			addNS(x.Name)
		case *v1.Service:
			addNS(x.Namespace)
			svcs = append(svcs, x)
		case *discoveryv1.EndpointSlice:
			slices = append(slices, x)
		}
	}
	return nss, svcs, slices
}

func namespace(name string) *v1.Namespace {
	return &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// rrs parses zone-file lines; "{serial}" stands for the snapshot's SOA serial.
func rrs(t testing.TB, s *Server, lines ...string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		l = strings.ReplaceAll(l, "{serial}", fmt.Sprint(s.snap.Load().serial))
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("bad expected record %q: %v", l, err)
		}
		out = append(out, rr.String())
	}
	return out
}

func strs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, rr.String())
	}
	return out
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// fakeSource lists and watches a fake clientset, as the informers of the
// generated clientset do.
func fakeSource(c *fake.Clientset) Source {
	lw := func(list func(context.Context, metav1.ListOptions) (runtime.Object, error), watch func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{ListWithContextFunc: list, WatchFuncWithContext: watch}, c)
	}
	return Source{
		Namespaces: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.CoreV1().Namespaces().List(ctx, o)
		}, c.CoreV1().Namespaces().Watch),
		Services: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.CoreV1().Services("").List(ctx, o)
		}, c.CoreV1().Services("").Watch),
		EndpointSlices: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.DiscoveryV1().EndpointSlices("").List(ctx, o)
		}, c.DiscoveryV1().EndpointSlices("").Watch),
	}
}
