package ingress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// certEntry is a host's certificate and the Secret it came from.
type certEntry struct {
	cert   *tls.Certificate
	secret string // namespace/name
}

// certTable maps TLS server names to certificates.
type certTable struct {
	exact    map[string]*certEntry
	wildcard map[string]*certEntry // "*.foo.com" is stored under "foo.com"
	// fallback is the certificate of the oldest TLS section without hosts.
	fallback *tls.Certificate
}

// forSNI picks the certificate for a TLS server name: exact host, then a
// one-label wildcard, then the fallback. It returns nil when none applies
// (the caller serves the default certificate).
func (c *certTable) forSNI(name string) *tls.Certificate {
	name = requestHost(name)
	if e := c.exact[name]; e != nil {
		return e.cert
	}
	if s, ok := wildcardSuffix(name); ok {
		if e := c.wildcard[s]; e != nil {
			return e.cert
		}
	}
	return c.fallback
}

// selfSignedCert generates the default certificate served when no Secret
// matches, as ingress-nginx's "Fake Certificate": clients that verify will
// reject it, which is the point.
func selfSignedCert() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate default certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("generate default certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Knet Ingress Default Certificate", Organization: []string{"knet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"ingress.local"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create default certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse default certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// certCache parses each TLS Secret version once: parsing keys on every
// table rebuild would cost milliseconds per Secret. Used by the sync
// goroutine only.
type certCache struct {
	entries map[string]cachedCert // namespace/name
}

type cachedCert struct {
	resourceVersion string
	cert            *tls.Certificate
	err             error
}

func newCertCache() *certCache { return &certCache{entries: map[string]cachedCert{}} }

func (c *certCache) load(sec *corev1.Secret) (*tls.Certificate, error) {
	key := sec.Namespace + "/" + sec.Name
	if e, ok := c.entries[key]; ok && e.resourceVersion == sec.ResourceVersion && sec.ResourceVersion != "" {
		return e.cert, e.err
	}
	cert, err := parseTLSSecret(sec)
	c.entries[key] = cachedCert{resourceVersion: sec.ResourceVersion, cert: cert, err: err}
	return cert, err
}

// retain forgets Secrets that are gone.
func (c *certCache) retain(secrets map[string]*corev1.Secret) {
	for k := range c.entries {
		if secrets[k] == nil {
			delete(c.entries, k)
		}
	}
}

func parseTLSSecret(sec *corev1.Secret) (*tls.Certificate, error) {
	crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, errors.New("Secret " + sec.Namespace + "/" + sec.Name + " lacks tls.crt or tls.key")
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s holds no valid certificate and key: %w", sec.Namespace, sec.Name, err)
	}
	return &cert, nil
}
