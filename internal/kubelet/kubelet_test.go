package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/utils/exec"
)

// clientCertPEM returns the client certificate and key of a TLS config as PEM.
func clientCertPEM(t *testing.T, c *tls.Config) (certPEM, keyPEM []byte) {
	t.Helper()
	cert := c.Certificates[0]
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// testPKI writes a CA, a serving certificate for 127.0.0.1 and a client
// certificate, and returns their paths plus a client TLS config.
func testPKI(t *testing.T) (caFile, certFile, keyFile string, client *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	writePEM := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	caFile = writePEM("ca.crt", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, "node-a", x509.ExtKeyUsageServerAuth)
	certFile = writePEM("kubelet.crt", "CERTIFICATE", srvDER)
	keyFile = writePEM("kubelet.key", "EC PRIVATE KEY", keyDER(srvKey))
	cliDER, cliKey := issue(3, "kube-apiserver-kubelet-client", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	client = &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}},
	}
	return caFile, certFile, keyFile, client
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Run against a fake API server: the Node is registered, a pod bound to it
// runs and reports Running with its IP, the kubelet API serves its logs
// only to clients with a certificate from ClientCA, and a deleted pod is
// stopped and detached.
func TestRunWithFakeAPIServer(t *testing.T) {
	requireRoot(t)
	// Every API server has default/kubernetes; the kubelet holds containers until it sees it.
	client := fake.NewClientset(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}},
	})
	tk := newTestKubelet(t)
	caFile, certFile, keyFile, clientTLS := testPKI(t)
	port := freePort(t)
	tk.cfg.Client = client
	tk.cfg.ServingCert, tk.cfg.ServingKey, tk.cfg.ClientCA = certFile, keyFile, caFile
	tk.cfg.ListenAddr = fmt.Sprintf("127.0.0.1:%d", port)
	tk.podLister = nil // Run wires virtual-kubelet's lister

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- tk.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})

	var node *corev1.Node
	waitUntil(t, "node registration", 15*time.Second, func() bool {
		n, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		node = n
		return err == nil
	})
	if node.Labels["kubernetes.io/os"] != "linux" || node.Status.NodeInfo.KubeletVersion != "v1.35.4" {
		t.Errorf("registered node: labels %v nodeInfo %+v", node.Labels, node.Status.NodeInfo)
	}

	pod := newTestPod("web")
	pod.Spec.Containers = []corev1.Container{{Name: "main", Image: "busybox",
		Command: []string{"/bin/sh", "-c", "echo served-log-line; while true; do sleep 0.1; done"}}}
	socat, socatErr := exec.LookPath("socat")
	if socatErr == nil {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "srv", Image: "busybox",
			Command: []string{socat, "TCP-LISTEN:8080,bind=127.0.0.1,fork,reuseaddr", "SYSTEM:echo pong"}})
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got *corev1.Pod
	waitUntil(t, "pod Ready in the API", 20*time.Second, func() bool {
		p, err := client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		got = p
		return err == nil && podReady(p)
	})
	t.Logf("pod Ready in the API %s after creation", time.Since(start))
	if got.Status.Phase != corev1.PodRunning || got.Status.PodIP != "192.0.2.10" || got.Status.StartTime == nil {
		t.Errorf("pod status in the API: %+v", got.Status)
	}

	// The kubelet API requires a client certificate signed by ClientCA.
	url := fmt.Sprintf("https://127.0.0.1:%d/containerLogs/default/web/main", port)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}, Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("kubelet API: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "served-log-line") {
		t.Errorf("containerLogs: %d %q", resp.StatusCode, body)
	}
	if resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port)); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %v %v", resp, err)
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: clientTLS.RootCAs}}, Timeout: 10 * time.Second}
	if resp, err := anon.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("kubelet API served a client without certificate: %d", resp.StatusCode)
	}

	// exec and port-forward as the API server relays them (SPDY).
	restCfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", port), TLSClientConfig: rest.TLSClientConfig{CAFile: caFile}}
	restCfg.TLSClientConfig.CertData, restCfg.TLSClientConfig.KeyData = clientCertPEM(t, clientTLS)
	execURL, _ := neturl.Parse(fmt.Sprintf("https://127.0.0.1:%d/exec/default/web/main?command=sh&command=-c&command=echo+out%%3B+echo+err+%%3E%%262%%3B+exit+7&output=1&error=1", port))
	ex, err := remotecommand.NewSPDYExecutor(restCfg, "POST", execURL)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	var exitErr utilexec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 7 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("exec: err %v, stdout %q, stderr %q; want exit 7, out, err", err, stdout.String(), stderr.String())
	}
	if socatErr == nil {
		rt, upgrader, err := spdy.RoundTripperFor(restCfg)
		if err != nil {
			t.Fatal(err)
		}
		pfURL, _ := neturl.Parse(fmt.Sprintf("https://127.0.0.1:%d/portForward/default/web", port))
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", pfURL)
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		go fw.ForwardPorts()
		<-ready
		ports, _ := fw.GetPorts()
		var reply []byte
		waitUntil(t, "port-forward reply", 10*time.Second, func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
			if err != nil {
				return false
			}
			defer c.Close()
			reply, _ = io.ReadAll(c)
			return len(reply) > 0
		})
		close(stop)
		if string(reply) != "pong\n" {
			t.Errorf("port-forward reply = %q", reply)
		}
	}

	// Deleting the pod from the API stops it and detaches its network.
	if err := client.CoreV1().Pods("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pod stopped and forgotten", 20*time.Second, func() bool {
		return tk.worker("default", "web") == nil && tk.net.attachments() == 0
	})
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
