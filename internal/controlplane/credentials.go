package controlplane

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clusterPKI is the on-disk layout under DataDir/pki, in kubeadm's naming so
// the files are recognisable.
type clusterPKI struct {
	dir string

	ca         *authority // cluster CA: client CA, kubelet serving CA, CSR signer
	frontProxy *authority // request-header CA for aggregated API servers
	etcd       *authority // etcd's own CA: only the API server may talk to etcd

	apiserverCert, apiserverKey               string
	kubeletClientCert, kubeletClientKey       string
	frontProxyClientCert, frontProxyClientKey string
	etcdServerCert, etcdServerKey             string
	etcdClientCert, etcdClientKey             string
	serviceAccountKey, serviceAccountPub      string
}

// ensurePKI creates what is missing under dataDir/pki and reissues leaves
// whose names changed (for example a new AdvertiseAddress), keeping the CAs.
func ensurePKI(cfg Config) (*clusterPKI, error) {
	dir := filepath.Join(cfg.DataDir, "pki")
	if err := os.MkdirAll(filepath.Join(dir, "etcd"), 0o700); err != nil {
		return nil, fmt.Errorf("create PKI directory: %w", err)
	}
	p := &clusterPKI{
		dir:                  dir,
		apiserverCert:        filepath.Join(dir, "apiserver.crt"),
		apiserverKey:         filepath.Join(dir, "apiserver.key"),
		kubeletClientCert:    filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:     filepath.Join(dir, "apiserver-kubelet-client.key"),
		frontProxyClientCert: filepath.Join(dir, "front-proxy-client.crt"),
		frontProxyClientKey:  filepath.Join(dir, "front-proxy-client.key"),
		etcdServerCert:       filepath.Join(dir, "etcd", "server.crt"),
		etcdServerKey:        filepath.Join(dir, "etcd", "server.key"),
		etcdClientCert:       filepath.Join(dir, "apiserver-etcd-client.crt"),
		etcdClientKey:        filepath.Join(dir, "apiserver-etcd-client.key"),
		serviceAccountKey:    filepath.Join(dir, "sa.key"),
		serviceAccountPub:    filepath.Join(dir, "sa.pub"),
	}
	var err error
	if p.ca, err = loadOrCreateCA(dir, "ca", "knet-ca"); err != nil {
		return nil, err
	}
	if p.frontProxy, err = loadOrCreateCA(dir, "front-proxy-ca", "knet-front-proxy-ca"); err != nil {
		return nil, err
	}
	if p.etcd, err = loadOrCreateCA(filepath.Join(dir, "etcd"), "ca", "knet-etcd-ca"); err != nil {
		return nil, err
	}

	kubernetesIP, err := firstServiceIP(cfg.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	serverIPs := uniqueIPs(net.ParseIP(cfg.BindAddress), cfg.AdvertiseAddress, kubernetesIP)
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1).To4()}

	issue := []struct {
		ca                *authority
		certFile, keyFile string
		spec              leafSpec
	}{
		{p.ca, p.apiserverCert, p.apiserverKey, leafSpec{
			commonName: "kube-apiserver",
			dnsNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local", "localhost"},
			ips:    serverIPs,
			usages: serverAuth,
		}},
		// system:masters because the API server proxies exec, logs and
		// port-forward to kubelets, which authorise it like an admin.
		{p.ca, p.kubeletClientCert, p.kubeletClientKey, leafSpec{
			commonName: "kube-apiserver-kubelet-client", organization: []string{"system:masters"}, usages: clientAuth,
		}},
		{p.frontProxy, p.frontProxyClientCert, p.frontProxyClientKey, leafSpec{
			commonName: frontProxyClientName, usages: clientAuth,
		}},
		// etcd uses the server certificate for peer traffic too, hence both usages.
		{p.etcd, p.etcdServerCert, p.etcdServerKey, leafSpec{
			commonName: "knet-etcd", dnsNames: []string{"localhost"}, ips: loopback, usages: both,
		}},
		{p.etcd, p.etcdClientCert, p.etcdClientKey, leafSpec{
			commonName: "kube-apiserver-etcd-client", usages: clientAuth,
		}},
	}
	for _, l := range issue {
		if _, _, err := l.ca.leaf(l.certFile, l.keyFile, l.spec); err != nil {
			return nil, err
		}
	}
	if err := loadOrCreateServiceAccountKey(p.serviceAccountKey, p.serviceAccountPub); err != nil {
		return nil, err
	}
	return p, nil
}

// frontProxyClientName is the only name the API server accepts request
// headers from (--requestheader-allowed-names).
const frontProxyClientName = "front-proxy-client"

// writeClientKubeconfig issues (or reuses) a client certificate for user
// and writes a self-contained kubeconfig for it pointing at server.
func (p *clusterPKI) writeClientKubeconfig(path, server, user string, groups []string, certFile, keyFile string) error {
	certPEM, keyPEM, err := p.ca.leaf(certFile, keyFile, leafSpec{
		commonName: user, organization: groups, usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["knet"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.ca.certPEM()}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kc.Contexts["knet"] = &clientcmdapi.Context{Cluster: "knet", AuthInfo: user}
	kc.CurrentContext = "knet"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	return writeFileAtomic(path, data, 0o600)
}

// NodeCredentials are the files a node's kubelet needs, all signed by the
// cluster CA.
type NodeCredentials struct {
	// Kubeconfig authenticates as system:node:<name> (group system:nodes)
	// against https://AdvertiseAddress:SecurePort.
	Kubeconfig string
	// ServingCert and ServingKey are the kubelet's :10250 certificate, valid
	// for the node's IP and name. The API server verifies it against the
	// cluster CA when it proxies logs, exec and port-forward.
	ServingCert, ServingKey string
	// ClientCA is the CA the kubelet uses to authenticate callers such as the
	// API server (--client-ca-file).
	ClientCA string
}

// NodeCredentials issues, or reuses if still valid, the credentials of node
// name at nodeIP. Files live under DataDir/pki/nodes/<name>/. It is safe to
// call concurrently.
func (cp *ControlPlane) NodeCredentials(name string, nodeIP net.IP) (NodeCredentials, error) {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return NodeCredentials{}, fmt.Errorf("node name %q is not a valid Node name: %v", name, errs)
	}
	if nodeIP == nil || nodeIP.IsUnspecified() {
		return NodeCredentials{}, fmt.Errorf("node %s: a specific node IP is required for its serving certificate", name)
	}
	cp.credMu.Lock()
	defer cp.credMu.Unlock()

	dir := filepath.Join(cp.pki.dir, "nodes", name)
	creds := NodeCredentials{
		Kubeconfig:  filepath.Join(dir, "kubelet.kubeconfig"),
		ServingCert: filepath.Join(dir, "kubelet.crt"),
		ServingKey:  filepath.Join(dir, "kubelet.key"),
		ClientCA:    cp.pki.ca.certFile,
	}
	server := "https://" + net.JoinHostPort(cp.cfg.AdvertiseAddress.String(), strconv.Itoa(cp.cfg.SecurePort))
	if err := cp.pki.writeClientKubeconfig(creds.Kubeconfig, server, "system:node:"+name, []string{"system:nodes"},
		filepath.Join(dir, "kubelet-client.crt"), filepath.Join(dir, "kubelet-client.key")); err != nil {
		return NodeCredentials{}, fmt.Errorf("node %s kubeconfig: %w", name, err)
	}
	if _, _, err := cp.pki.ca.leaf(creds.ServingCert, creds.ServingKey, leafSpec{
		commonName: "system:node:" + name, organization: []string{"system:nodes"},
		dnsNames: []string{name}, ips: []net.IP{normalizeIP(nodeIP)},
		usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return NodeCredentials{}, fmt.Errorf("node %s serving certificate: %w", name, err)
	}
	return creds, nil
}

func normalizeIP(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func uniqueIPs(ips ...net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		ip = normalizeIP(ip)
		dup := false
		for _, o := range out {
			dup = dup || o.Equal(ip)
		}
		if !dup {
			out = append(out, ip)
		}
	}
	return out
}
