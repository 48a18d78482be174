package controlplane

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
)

func testPKIConfig(t *testing.T, advertise string) Config {
	c := Config{DataDir: t.TempDir(), AdvertiseAddress: net.ParseIP(advertise)}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs, err := certutil.CertsFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// verify checks cert chains to the CA in caFile for usage (and host, if set).
func verify(t *testing.T, cert *x509.Certificate, caFile string, usage x509.ExtKeyUsage, host string) {
	t.Helper()
	pool, err := certutil.NewPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Errorf("certificate %s does not verify for %q against %s: %v", cert.Subject.CommonName, host, caFile, err)
	}
}

func TestPKIServingCertificate(t *testing.T) {
	cfg := testPKIConfig(t, "172.18.0.1")
	p, err := ensurePKI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cert := readCert(t, p.apiserverCert)
	// What a client of each kind would dial.
	for _, host := range []string{"127.0.0.1", "172.18.0.1", "10.96.0.1", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"} {
		verify(t, cert, p.ca.certFile, x509.ExtKeyUsageServerAuth, host)
	}
	kc := readCert(t, p.kubeletClientCert)
	verify(t, kc, p.ca.certFile, x509.ExtKeyUsageClientAuth, "")
	if kc.Subject.CommonName != "kube-apiserver-kubelet-client" || !slices.Equal(kc.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("kubelet client subject = %v", kc.Subject)
	}
	verify(t, readCert(t, p.frontProxyClientCert), p.frontProxy.certFile, x509.ExtKeyUsageClientAuth, "")
	verify(t, readCert(t, p.etcdClientCert), p.etcd.certFile, x509.ExtKeyUsageClientAuth, "")
	verify(t, readCert(t, p.etcdServerCert), p.etcd.certFile, x509.ExtKeyUsageServerAuth, "127.0.0.1")
	// The API server's etcd client certificate must not be accepted as a
	// cluster client: etcd has its own CA.
	pool, _ := certutil.NewPool(p.ca.certFile)
	if _, err := readCert(t, p.etcdClientCert).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("etcd client certificate verifies against the cluster CA")
	}
}

func TestPKIReusedAndReissued(t *testing.T) {
	cfg := testPKIConfig(t, "172.18.0.1")
	first, err := ensurePKI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(first.ca.certFile)
	serving := readCert(t, first.apiserverCert)
	kubeletClient := readCert(t, first.kubeletClientCert)
	saBefore, _ := os.ReadFile(first.serviceAccountKey)

	again, err := ensurePKI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := readCert(t, again.apiserverCert); got.SerialNumber.Cmp(serving.SerialNumber) != 0 {
		t.Error("serving certificate was reissued although nothing changed")
	}

	cfg.AdvertiseAddress = net.ParseIP("172.19.0.1")
	moved, err := ensurePKI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	caAfter, _ := os.ReadFile(moved.ca.certFile)
	saAfter, _ := os.ReadFile(moved.serviceAccountKey)
	if string(caAfter) != string(caBefore) || string(saAfter) != string(saBefore) {
		t.Error("CA or service-account key changed on restart; every issued credential would break")
	}
	newServing := readCert(t, moved.apiserverCert)
	if newServing.SerialNumber.Cmp(serving.SerialNumber) == 0 {
		t.Fatal("serving certificate kept although AdvertiseAddress changed")
	}
	verify(t, newServing, moved.ca.certFile, x509.ExtKeyUsageServerAuth, "172.19.0.1")
	if got := readCert(t, moved.kubeletClientCert); got.SerialNumber.Cmp(kubeletClient.SerialNumber) != 0 {
		t.Error("kubelet client certificate reissued although its subject did not change")
	}
}

func TestNodeCredentialsFiles(t *testing.T) {
	cfg := testPKIConfig(t, "172.18.0.1")
	p, err := ensurePKI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cp := &ControlPlane{cfg: cfg, pki: p}
	creds, err := cp.NodeCredentials("node-a", net.ParseIP("172.18.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	serving := readCert(t, creds.ServingCert)
	verify(t, serving, creds.ClientCA, x509.ExtKeyUsageServerAuth, "172.18.0.2")

	kc, err := clientcmd.LoadFromFile(creds.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if got := kc.Clusters[ctx.Cluster].Server; got != "https://172.18.0.1:6443" {
		t.Errorf("node kubeconfig server = %q, want the advertise address", got)
	}
	client, err := certutil.ParseCertsPEM(kc.AuthInfos[ctx.AuthInfo].ClientCertificateData)
	if err != nil {
		t.Fatal(err)
	}
	if client[0].Subject.CommonName != "system:node:node-a" || !slices.Equal(client[0].Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("node client subject = %v, want CN=system:node:node-a O=system:nodes", client[0].Subject)
	}
	verify(t, client[0], creds.ClientCA, x509.ExtKeyUsageClientAuth, "")

	// Same IP: reused. New IP: the serving certificate follows.
	again, err := cp.NodeCredentials("node-a", net.ParseIP("172.18.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	if readCert(t, again.ServingCert).SerialNumber.Cmp(serving.SerialNumber) != 0 {
		t.Error("serving certificate reissued for an unchanged node")
	}
	moved, err := cp.NodeCredentials("node-a", net.ParseIP("172.18.0.9"))
	if err != nil {
		t.Fatal(err)
	}
	verify(t, readCert(t, moved.ServingCert), creds.ClientCA, x509.ExtKeyUsageServerAuth, "172.18.0.9")

	if _, err := cp.NodeCredentials("../etc", net.ParseIP("172.18.0.3")); err == nil {
		t.Error("a node name with a path in it was accepted")
	}
	if _, err := os.Stat(filepath.Join(p.dir, "etc")); err == nil {
		t.Error("NodeCredentials wrote outside pki/nodes")
	}
}
