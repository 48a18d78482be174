package controlplane

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// A leaf closer than this to expiry is reissued at the next start, so a
	// cluster restarted at least monthly never serves an expired certificate.
	renewBefore = 30 * 24 * time.Hour
)

// authority is a CA whose key lives on disk next to its certificate.
type authority struct {
	cert     *x509.Certificate
	key      crypto.Signer
	certFile string
	keyFile  string
}

// leafSpec is what a leaf certificate must say; an existing certificate is
// reused only if it still says exactly this.
type leafSpec struct {
	commonName   string
	organization []string
	dnsNames     []string
	ips          []net.IP
	usages       []x509.ExtKeyUsage
}

// loadOrCreateCA reuses the CA at dir/name.{crt,key} or creates it. A CA is
// never replaced once it exists: every credential handed out depends on it.
func loadOrCreateCA(dir, name, commonName string) (*authority, error) {
	ca := &authority{
		certFile: filepath.Join(dir, name+".crt"),
		keyFile:  filepath.Join(dir, name+".key"),
	}
	cert, key, err := loadPair(ca.certFile, ca.keyFile)
	switch {
	case err == nil:
		if !cert.IsCA {
			return nil, fmt.Errorf("%s is not a CA certificate; move it away to let knet create a new CA", ca.certFile)
		}
		ca.cert, ca.key = cert, key
		return ca, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("load CA %s: %w (delete both files to create a new CA, which invalidates every issued credential)", name, err)
	}

	key, err = newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", name, err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA %s: %w", name, err)
	}
	if err := writePair(ca.certFile, ca.keyFile, cert, key); err != nil {
		return nil, err
	}
	ca.cert, ca.key = cert, key
	return ca, nil
}

// leaf reuses the certificate at certFile/keyFile if the CA signed it, it
// matches spec and it is not near expiry; otherwise it issues a new one.
// It returns the certificate and key as PEM for callers that embed them.
func (ca *authority) leaf(certFile, keyFile string, spec leafSpec) (certPEM, keyPEM []byte, err error) {
	if cert, _, err := loadPair(certFile, keyFile); err == nil && ca.issued(cert) && spec.matches(cert) &&
		time.Until(cert.NotAfter) > renewBefore {
		certPEM, err1 := os.ReadFile(certFile)
		keyPEM, err2 := os.ReadFile(keyFile)
		if err := errors.Join(err1, err2); err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", certFile, err)
		}
		return certPEM, keyPEM, nil
	}

	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: mustSerial(),
		Subject:      pkix.Name{CommonName: spec.commonName, Organization: spec.organization},
		DNSNames:     spec.dnsNames,
		IPAddresses:  spec.ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  spec.usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate %s: %w", spec.commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new certificate %s: %w", spec.commonName, err)
	}
	if err := writePair(certFile, keyFile, cert, key); err != nil {
		return nil, nil, err
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key %s: %w", keyFile, err)
	}
	return encodeCert(cert), keyPEM, nil
}

// certPEM returns the CA certificate as PEM.
func (ca *authority) certPEM() []byte { return encodeCert(ca.cert) }

func (ca *authority) issued(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, ca.cert.RawSubject) && cert.CheckSignatureFrom(ca.cert) == nil
}

func (s leafSpec) matches(cert *x509.Certificate) bool {
	if cert.Subject.CommonName != s.commonName || !sameStrings(cert.Subject.Organization, s.organization) ||
		!sameStrings(cert.DNSNames, s.dnsNames) || len(cert.IPAddresses) != len(s.ips) ||
		!slices.Equal(cert.ExtKeyUsage, s.usages) {
		return false
	}
	for i, ip := range s.ips {
		if !ip.Equal(cert.IPAddresses[i]) {
			return false
		}
	}
	return true
}

func sameStrings(a, b []string) bool { return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b)) }

func newKey() (*ecdsa.PrivateKey, error) {
	// ECDSA P-256: accepted everywhere Kubernetes takes a key (serving,
	// client auth, service-account tokens as ES256) and generated in
	// microseconds, where RSA would add seconds to a first start.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func mustSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func encodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certutil.CertificateBlockType, Bytes: cert.Raw})
}

func loadPair(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certs, err := certutil.CertsFromFile(certFile)
	if err != nil {
		if _, statErr := os.Stat(certFile); errors.Is(statErr, os.ErrNotExist) {
			return nil, nil, os.ErrNotExist
		}
		return nil, nil, err
	}
	key, err := keyutil.PrivateKeyFromFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s does not hold a signing key", keyFile)
	}
	return certs[0], signer, nil
}

func writePair(certFile, keyFile string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", keyFile, err)
	}
	// Key first: a crash in between leaves a key without certificate, which
	// the next start treats as missing and replaces.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, encodeCert(cert), 0o644)
}

// loadOrCreateServiceAccountKey keeps the key that signs service-account
// tokens; replacing it would invalidate every token in the cluster.
func loadOrCreateServiceAccountKey(keyFile, pubFile string) error {
	if _, err := keyutil.PrivateKeyFromFile(keyFile); err == nil {
		if _, err := os.Stat(pubFile); err == nil {
			return nil
		}
	} else if _, statErr := os.Stat(keyFile); statErr == nil {
		return fmt.Errorf("service-account key %s is unreadable: %w (deleting it invalidates every service-account token)", keyFile, err)
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return fmt.Errorf("encode service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encode service-account public key: %w", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(pubFile, pubPEM, 0o644)
}

// writeFileAtomic replaces path so readers never see a half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
