package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"knet/internal/ingress"
)

// The objects both proxies serve: one Ingress in namespace "web" routing
// benchHost + benchPath (Prefix) to Service svcA; svcB has the same
// endpoints and is where a "flip" change moves the route.
const (
	benchNS   = "web"
	benchIng  = "bench"
	benchHost = "bench.example"
	benchPath = "/hostname"
	svcA      = "hostname-a"
	svcB      = "hostname-b"
	tlsSecret = "bench-tls"
)

// knetAddrs is the child's ready line on stdout.
type knetAddrs struct {
	HTTP, HTTPS, Control string
}

// changeReply is the control endpoint's answer: when the Ingress update
// started (Unix ns, the machine's realtime clock that both processes share).
type changeReply struct {
	StartUnixNano int64
}

// knetMain runs knet's Ingress controller on a fake API holding the bench
// objects, and a control endpoint, until SIGTERM.
func knetMain(args []string) error {
	fs := flag.NewFlagSet("knet", flag.ExitOnError)
	backends := fs.String("backends", "", "comma-separated 127.0.0.1:port of the backends")
	certFile := fs.String("cert", "", "PEM certificate of the TLS Secret")
	keyFile := fs.String("key", "", "PEM key of the TLS Secret")
	_ = fs.Parse(args)

	var ports []int32
	for _, b := range strings.Split(*backends, ",") {
		_, p, err := net.SplitHostPort(b)
		if err != nil {
			return fmt.Errorf("--backends %q: want 127.0.0.1:port,...: %w", *backends, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("--backends port %q: %w", p, err)
		}
		ports = append(ports, int32(n))
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return fmt.Errorf("read --cert: %w", err)
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("read --key: %w", err)
	}

	client := fake.NewClientset(benchObjects(ports, certPEM, keyPEM)...)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Production defaults (MinSyncInterval 100ms, pools, timeouts): only the
	// listen addresses differ from the knet-ingress add-on.
	c, err := ingress.New(ingress.Config{
		Client: client, HTTPListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0", HealthListen: "127.0.0.1:0", Logger: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ctl := &control{client: client}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /change", ctl.serveChange)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	ctlLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen control: %w", err)
	}
	ctlSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go ctlSrv.Serve(ctlLn)
	defer ctlSrv.Close()

	h, s, _ := c.Addrs()
	ready, _ := json.Marshal(knetAddrs{HTTP: h.String(), HTTPS: s.String(), Control: ctlLn.Addr().String()})
	fmt.Println(string(ready))
	return c.Run(ctx)
}

// control applies Ingress changes to the fake API on request, one at a time.
type control struct {
	client *fake.Clientset
	mu     sync.Mutex
}

// serveChange handles POST /change?add=/path&flip=1: add appends a Prefix
// path to Service svcA on the bench host; flip moves benchPath between
// svcA and svcB. One Update carries both.
func (c *control) serveChange(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx := r.Context()
	start := time.Now()
	ings := c.client.NetworkingV1().Ingresses(benchNS)
	ing, err := ings.Get(ctx, benchIng, metav1.GetOptions{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	up := ing.DeepCopy()
	paths := &up.Spec.Rules[0].HTTP.Paths
	if r.URL.Query().Get("flip") == "1" {
		be := (*paths)[0].Backend.Service
		be.Name = map[string]string{svcA: svcB, svcB: svcA}[be.Name]
	}
	if add := r.URL.Query().Get("add"); add != "" {
		*paths = append(*paths, prefixPath(add, svcA))
	}
	if _, err := ings.Update(ctx, up, metav1.UpdateOptions{}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(changeReply{StartUnixNano: start.UnixNano()})
}

func prefixPath(p, svc string) networkingv1.HTTPIngressPath {
	pt := networkingv1.PathTypePrefix
	return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: networkingv1.IngressBackend{
		Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}
}

// benchObjects are what a user would create: the default IngressClass knet,
// two Services whose EndpointSlices (one per backend, since the loopback
// backends differ by port) list the backends, a kubernetes.io/tls Secret,
// and the Ingress. TLS covers "127.0.0.1" too because wrk sends the URL's
// host as SNI; ssl-redirect is off so plain HTTP is proxied as HAProxy does.
func benchObjects(ports []int32, certPEM, keyPEM []byte) []runtime.Object {
	objs := []runtime.Object{
		&networkingv1.IngressClass{
			ObjectMeta: metav1.ObjectMeta{Name: "knet", Annotations: map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}},
			Spec:       networkingv1.IngressClassSpec{Controller: "knet.dev/ingress"},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: tlsSecret, ResourceVersion: "1"},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		},
		&networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: benchIng, CreationTimestamp: metav1.Now(),
				Annotations: map[string]string{"knet.dev/ssl-redirect": "false"}},
			Spec: networkingv1.IngressSpec{
				TLS: []networkingv1.IngressTLS{{Hosts: []string{benchHost, "127.0.0.1"}, SecretName: tlsSecret}},
				Rules: []networkingv1.IngressRule{{Host: benchHost, IngressRuleValue: networkingv1.IngressRuleValue{
					HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{prefixPath(benchPath, svcA)}}}}},
			},
		},
	}
	tcp := corev1.ProtocolTCP
	portName := "http"
	for _, svc := range []string{svcA, svcB} {
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: svc},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
				Name: portName, Port: 80, Protocol: tcp, TargetPort: intstr.FromString(portName)}}},
		})
		for i, port := range ports {
			ready := true
			objs = append(objs, &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: fmt.Sprintf("%s-%d", svc, i),
					Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &tcp}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"},
					Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			})
		}
	}
	return objs
}
