package kubelet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
)

// Config configures a Kubelet. Call Defaults, then Validate.
type Config struct {
	NodeName string
	NodeIP   net.IP
	Client   kubernetes.Interface

	// StateDir holds pods (sandboxes, logs, termination messages), volumes
	// and the CNI cache. It must be private to this kubelet.
	StateDir   string
	CNIConfDir string
	CNIBinDir  string

	ClusterDNS    []string // e.g. ["10.96.0.10"]
	ClusterDomain string   // e.g. "cluster.local"
	// HostResolvConf is the resolv.conf used for dnsPolicy Default (and as the
	// search/options base for ClusterFirst).
	HostResolvConf string

	Images ImageMap

	// Kubelet API TLS: clients must present a certificate signed by ClientCA.
	ServingCert, ServingKey, ClientCA string
	ListenAddr                        string // ":10250"

	// HelperBinary is the knet binary the sandbox re-executes.
	HelperBinary string
	// Version is reported as containerRuntimeVersion "knet://<Version>".
	Version string

	Logger *slog.Logger
}

// Defaults fills unset optional fields.
func (c *Config) Defaults() {
	if c.ListenAddr == "" {
		c.ListenAddr = ":10250"
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.HostResolvConf == "" {
		c.HostResolvConf = "/etc/resolv.conf"
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = "/etc/cni/net.d"
	}
	if c.CNIBinDir == "" {
		c.CNIBinDir = "/opt/cni/bin"
	}
	if c.HelperBinary == "" {
		if exe, err := os.Executable(); err == nil {
			c.HelperBinary = exe
		}
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every missing or inconsistent field at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("NodeName is required"))
	}
	if c.NodeIP == nil {
		errs = append(errs, errors.New("NodeIP is required (the address pods with hostNetwork get and the API server dials)"))
	}
	if c.Client == nil {
		errs = append(errs, errors.New("Client is required"))
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("StateDir %q must be an absolute path", c.StateDir))
	}
	if c.HelperBinary == "" {
		errs = append(errs, errors.New("HelperBinary is required (path of the knet binary)"))
	}
	for _, ip := range c.ClusterDNS {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("ClusterDNS entry %q is not an IP address", ip))
		}
	}
	if (c.ServingCert == "") != (c.ServingKey == "") {
		errs = append(errs, errors.New("ServingCert and ServingKey must be set together"))
	}
	if c.ServingCert != "" && c.ClientCA == "" {
		errs = append(errs, errors.New("ClientCA is required with ServingCert: the kubelet API only accepts client certificates"))
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("ListenAddr %q: %w", c.ListenAddr, err))
	}
	return errors.Join(errs...)
}

// Directory layout below StateDir.
func (c *Config) podsDir() string    { return filepath.Join(c.StateDir, "pods") }
func (c *Config) volumesDir() string { return filepath.Join(c.StateDir, "volumes") }
func (c *Config) cniCacheDir() string {
	return filepath.Join(c.StateDir, "cni-cache")
}
