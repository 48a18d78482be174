package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// newIngress is an Ingress created age seconds after epoch.
func newIngress(ns, name string, age int, rules ...networkingv1.IngressRule) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name),
			CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))},
		Spec: networkingv1.IngressSpec{Rules: rules},
	}
}

func httpRule(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{
		HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
}

func ingPath(p string, pt networkingv1.PathType, svc string, port int32) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: svcBackend(svc, port)}
}

func svcBackend(svc string, port int32) networkingv1.IngressBackend {
	return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: svc, Port: networkingv1.ServiceBackendPort{Number: port}}}
}

// newService has one TCP port "http" (port -> targetPort 8080).
func newService(ns, name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
			Name: "http", Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}},
	}
}

// newSlice is an EndpointSlice of svc with one port named portName; each
// address is "ip" (ready) or "!ip" (not ready).
func newSlice(ns, svc, portName string, port int32, addrs ...string) *discoveryv1.EndpointSlice {
	proto := corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + fmt.Sprint(port),
			Labels: map[string]string{serviceNameLabel: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		ready := true
		if a[0] == '!' {
			ready, a = false, a[1:]
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

func knetClass(isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "knet"},
		Spec: networkingv1.IngressClassSpec{Controller: "knet.dev/ingress"}}
	if isDefault {
		c.Annotations = map[string]string{defaultClassAnnotation: "true"}
	}
	return c
}

func testBuilder(t *testing.T) *builder {
	t.Helper()
	certs := newCertCache()
	return &builder{className: "knet", controllerName: "knet.dev/ingress", pools: newPoolSet(time.Second, 4),
		loadCert: func(s *corev1.Secret) (*tls.Certificate, error) { return certs.load(s) }}
}

// build builds a table from objects of any of the snapshot's kinds.
func build(t *testing.T, objs ...any) *buildResult {
	t.Helper()
	var (
		ings    []*networkingv1.Ingress
		classes []*networkingv1.IngressClass
		svcs    []*corev1.Service
		eps     []*discoveryv1.EndpointSlice
		secs    []*corev1.Secret
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *networkingv1.Ingress:
			ings = append(ings, o)
		case *networkingv1.IngressClass:
			classes = append(classes, o)
		case *corev1.Service:
			svcs = append(svcs, o)
		case *discoveryv1.EndpointSlice:
			eps = append(eps, o)
		case *corev1.Secret:
			secs = append(secs, o)
		default:
			t.Fatalf("unexpected object %T", o)
		}
	}
	return testBuilder(t).build(newSnapshot(ings, classes, svcs, eps, secs))
}

// problemsOf lists "namespace/name reason" of a result's problems.
func problemsOf(res *buildResult) []string {
	var out []string
	for _, p := range res.problems {
		out = append(out, p.ingress.Namespace+"/"+p.ingress.Name+" "+p.reason)
	}
	return out
}

// tlsSecret is a kubernetes.io/tls Secret with a fresh self-signed
// certificate for hosts, and a pool that trusts it.
func tlsSecret(t *testing.T, ns, name string, hosts ...string) (*corev1.Secret, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: hosts, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		},
	}, pool
}
