package ingress

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
)

// Config configures a Controller. New calls Defaults and Validate.
type Config struct {
	// Client reads Ingresses, IngressClasses, Services, EndpointSlices and
	// TLS Secrets, and writes Ingress status and Events. Required.
	Client kubernetes.Interface
	// HTTPListen, HTTPSListen and HealthListen are host:port listen
	// addresses (":80", ":443", ":10254"). Port 0 picks a free port (tests).
	HTTPListen, HTTPSListen, HealthListen string
	// ClassName is the IngressClass this controller owns ("knet");
	// ControllerName is that class's spec.controller ("knet.dev/ingress").
	ClassName, ControllerName string
	// PublishService is the "namespace/name" of the LoadBalancer Service in
	// front of this proxy; its status.loadBalancer.ingress is copied into
	// every served Ingress's status. Empty disables status publishing.
	PublishService string
	Logger         *slog.Logger
	// Recorder receives Warning events for invalid Ingresses. Nil means
	// events are written to the API through Client.
	Recorder record.EventRecorder

	// MinSyncInterval coalesces bursts of API events into one rebuild of
	// the routing table. Default 100ms.
	MinSyncInterval time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers (default 10s); IdleTimeout bounds idle client keep-alive
	// connections (default 60s); DialTimeout bounds a backend connect
	// (default 5s); BackendTimeout bounds the wait for a backend's response
	// headers (default 60s, as nginx's proxy_read_timeout).
	ReadHeaderTimeout, IdleTimeout, DialTimeout, BackendTimeout time.Duration
	// MaxHeaderBytes bounds a client's request line plus headers (default
	// 32 KiB, nginx's 4 x 8k); larger requests get 431.
	MaxHeaderBytes int
	// MaxIdlePerEndpoint bounds the idle keep-alive connections kept per
	// backend endpoint (default 256).
	MaxIdlePerEndpoint int
}

// Defaults fills unset fields with the values the knet-ingress add-on uses.
func (c *Config) Defaults() {
	if c.HTTPListen == "" {
		c.HTTPListen = ":80"
	}
	if c.HTTPSListen == "" {
		c.HTTPSListen = ":443"
	}
	if c.HealthListen == "" {
		c.HealthListen = ":10254"
	}
	if c.ClassName == "" {
		c.ClassName = "knet"
	}
	if c.ControllerName == "" {
		c.ControllerName = "knet.dev/ingress"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = 100 * time.Millisecond
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.BackendTimeout == 0 {
		c.BackendTimeout = 60 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 32 << 10
	}
	if c.MaxIdlePerEndpoint == 0 {
		c.MaxIdlePerEndpoint = 256
	}
}

// Validate reports the first invalid field and how to fix it.
func (c *Config) Validate() error {
	if c.Client == nil {
		return errors.New("ingress config: Client is nil: pass a Kubernetes clientset (in-cluster or from a kubeconfig)")
	}
	for _, l := range []struct{ name, addr string }{
		{"HTTPListen", c.HTTPListen}, {"HTTPSListen", c.HTTPSListen}, {"HealthListen", c.HealthListen},
	} {
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return fmt.Errorf("ingress config: %s %q is not host:port (e.g. \":80\"): %w", l.name, l.addr, err)
		}
	}
	if c.ClassName == "" || c.ControllerName == "" {
		return errors.New("ingress config: ClassName and ControllerName must be set (defaults: knet, knet.dev/ingress)")
	}
	if c.PublishService != "" {
		ns, name, ok := strings.Cut(c.PublishService, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("ingress config: PublishService %q is not namespace/name (e.g. kube-system/knet-ingress)", c.PublishService)
		}
	}
	if c.MinSyncInterval < 0 || c.ReadHeaderTimeout < 0 || c.IdleTimeout < 0 || c.DialTimeout < 0 || c.BackendTimeout < 0 {
		return errors.New("ingress config: intervals and timeouts must not be negative (0 means the default)")
	}
	if c.MaxHeaderBytes < 1024 {
		return fmt.Errorf("ingress config: MaxHeaderBytes %d is below 1024: real browsers send more (default 32768)", c.MaxHeaderBytes)
	}
	if c.MaxIdlePerEndpoint < 1 {
		return fmt.Errorf("ingress config: MaxIdlePerEndpoint %d must be at least 1", c.MaxIdlePerEndpoint)
	}
	return nil
}
