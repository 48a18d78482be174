package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// ingressAddress is the knet-ingress LoadBalancer address that Ingress status publishes.
func ingressAddress(t *testing.T, ns, name string) string {
	t.Helper()
	var ip string
	eventually(t, 30*time.Second, func() error {
		ing, err := client.NetworkingV1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(ing.Status.LoadBalancer.Ingress) == 0 || ing.Status.LoadBalancer.Ingress[0].IP == "" {
			return errorf("ingress %s has no address in its status yet", name)
		}
		ip = ing.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	return ip
}

func clusterIPService(t *testing.T, ns, name string) {
	createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	})
}

func prefixPath(path, svc string) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: path, PathType: ptr.To(networkingv1.PathTypePrefix),
		Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}
}

// get sends a request for host to the ingress address (Host header, no DNS needed).
func get(hc *http.Client, addr, host, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestIngressRoutesByHostAndPathWithTLS(t *testing.T) {
	ns := testNamespace(t)
	backends(t, ns, "blue", 1)
	backends(t, ns, "green", 1)
	clusterIPService(t, ns, "blue")
	clusterIPService(t, ns, "green")
	host := "shop-" + ns + ".example"
	certPEM, keyPEM := selfSigned(t, host)
	_, err := client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.NetworkingV1().Ingresses(ns).Create(context.Background(), &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "shop"},
		Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{Hosts: []string{host}, SecretName: "shop-tls"}},
			Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{prefixPath("/", "blue"), prefixPath("/shell", "green")}}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ingressAddress(t, ns, "shop")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr+":443")
		},
	}}
	// Over TLS, verified against the Secret's certificate: /hostname → blue; /shell (netexec runs
	// a command there, here `hostname`) → green.
	eventually(t, 20*time.Second, func() error {
		for path, want := range map[string]string{"/hostname": "blue-", "/shell?cmd=hostname": "green-"} {
			resp, err := hc.Get("https://" + host + path)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
				return errorf("https %s: HTTP %d %q, want an answer from %s*", path, resp.StatusCode, b, want)
			}
		}
		return nil
	})
	// Plain HTTP for a TLS host redirects to HTTPS; an unknown host gets 404.
	plain := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code, _, err := get(plain, addr, host, "/hostname"); err != nil || code != http.StatusPermanentRedirect {
		t.Errorf("http to a TLS host = %d (%v), want 308", code, err)
	}
	if code, _, err := get(plain, addr, "unknown.example", "/"); err != nil || code != 404 {
		t.Errorf("unknown host = %d (%v), want 404", code, err)
	}
}

func TestIngressRollingUpdateUnderLoadLosesNothing(t *testing.T) {
	ns := testNamespace(t)
	backends(t, ns, "roll", 2)
	clusterIPService(t, ns, "roll")
	host := "roll-" + ns + ".example"
	_, err := client.NetworkingV1().Ingresses(ns).Create(context.Background(), &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "roll"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{prefixPath("/", "roll")}}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ingressAddress(t, ns, "roll")
	hc := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 20*time.Second, func() error {
		code, body, err := get(hc, addr, host, "/hostname")
		if err != nil || code != 200 {
			return errorf("%d %q %v", code, body, err)
		}
		return nil
	})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := get(hc, addr, host, "/hostname")
				if err != nil || code != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, errorf("%d %q %v", code, body, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	mustKubectl(t, "rollout", "restart", "-n", ns, "deployment/roll")
	mustKubectl(t, "rollout", "status", "-n", ns, "deployment/roll", "--timeout=90s")
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("rolling update under load: %d requests ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the rolling update; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests succeeded: the load did not run", ok.Load())
	}
}

func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
