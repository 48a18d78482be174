// Package controlplane runs the upstream Kubernetes control plane inside the
// knet daemon, the way k3s embeds it: etcd (go.etcd.io/etcd/server/v3/embed),
// kube-apiserver, kube-controller-manager and kube-scheduler from
// k8s.io/kubernetes, wired through their own option structs, in this process.
//
// It owns everything under Config.DataDir: etcd data, the cluster PKI (CAs,
// serving and client certificates, the service-account key), kubeconfigs
// for the admin, the components and each node, and the components' log. It
// listens only on Config.BindAddress (loopback) and Config.AdvertiseAddress,
// and etcd only on 127.0.0.1.
//
// It never touches network interfaces, routes, nftables or namespaces, and
// knows nothing about the nodes beyond issuing their credentials.
//
// Process-wide effects: klog output is redirected to
// DataDir/logs/controlplane.log, and klog.OsExit is replaced while the
// control plane runs so that an upstream fatal path stops the control plane
// (reported by Err) instead of exiting the daemon. Start may be called again
// in the same process after Done is closed (a restart), but not while
// another ControlPlane is running.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/configz"
	"k8s.io/klog/v2"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const (
	readyTimeout = 2 * time.Minute
	// How long each stage of the shutdown may take before it is abandoned,
	// so a stuck component cannot keep Done open forever.
	stopTimeout = 30 * time.Second
	// The kube-scheduler registers its configz under this fixed name.
	schedulerConfigzName = "componentconfig"
)

// ControlPlane is a running control plane; see Start.
type ControlPlane struct {
	cfg     Config
	dataDir string
	log     *slog.Logger
	logFile string
	pki     *clusterPKI

	adminKubeconfig string
	restConfig      *rest.Config

	credMu sync.Mutex // serialises NodeCredentials

	etcd *embed.Etcd

	mu         sync.Mutex
	components []*component // in start order
	stopping   bool
	err        error

	failed   chan struct{} // closed by the first fail
	failOnce sync.Once
	done     chan struct{}

	startedAt time.Time
	readyIn   time.Duration
	rss       int64
}

// component is one upstream server running in its own goroutine.
type component struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Start is New followed by (*ControlPlane).Start.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	cp, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := cp.Start(ctx); err != nil {
		return nil, err
	}
	return cp, nil
}

// New prepares a control plane without running anything: it validates cfg,
// creates (or reuses) the PKI and writes the kubeconfigs, so that node
// credentials can be issued, and node processes started, while the
// components start.
func New(cfg Config) (*ControlPlane, error) {
	startedAt := time.Now()
	cfg.Defaults()
	if cfg.DataDir != "" {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("resolve DataDir %q: %w", cfg.DataDir, err)
		}
		cfg.DataDir = abs
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid control plane config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create DataDir: %w", err)
	}

	cp := &ControlPlane{
		cfg:       cfg,
		dataDir:   cfg.DataDir,
		log:       cfg.Logger.With("component", "controlplane"),
		logFile:   filepath.Join(cfg.DataDir, "logs", "controlplane.log"),
		failed:    make(chan struct{}),
		done:      make(chan struct{}),
		startedAt: startedAt,
	}
	var err error
	if cp.pki, err = ensurePKI(cfg); err != nil {
		return nil, fmt.Errorf("prepare certificates in %s: %w", filepath.Join(cfg.DataDir, "pki"), err)
	}
	if err := cp.writeKubeconfigs(); err != nil {
		return nil, err
	}
	return cp, nil
}

// Start brings up etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in this process and returns once the API server's /readyz
// answers ok, not counting the RBAC bootstrap roles (see rbacBootstrapCheck).
// The components stop when ctx is cancelled (scheduler and controller-manager
// first, then the API server, then etcd); Done closes after that, and Err says
// why they stopped if it was not ctx. Start may be called once per New.
func (cp *ControlPlane) Start(ctx context.Context) error {
	logOut, err := redirectKlog(cp.logFile)
	if err != nil {
		return err
	}
	cp.etcd, err = startEtcd(cp.cfg, cp.pki, cp.logFile)
	if err != nil {
		logOut.Close()
		return err
	}
	restoreExit := cp.catchKlogExit()
	go cp.supervise(ctx, logOut, restoreExit)

	if err := cp.startAll(ctx); err != nil {
		cp.fail(err)
		<-cp.done
		return err
	}
	cp.readyIn = time.Since(cp.startedAt)
	cp.rss, _ = rssBytes()
	cp.log.Info("control plane ready",
		"apiserver", "https://"+net.JoinHostPort(cp.cfg.AdvertiseAddress.String(), strconv.Itoa(cp.cfg.SecurePort)),
		"seconds", fmt.Sprintf("%.2f", cp.readyIn.Seconds()),
		"rssMiB", cp.rss>>20,
		"log", cp.logFile)
	return nil
}

func (cp *ControlPlane) writeKubeconfigs() error {
	local := "https://" + net.JoinHostPort(cp.cfg.BindAddress, strconv.Itoa(cp.cfg.SecurePort))
	pki := cp.pki.dir
	for _, k := range []struct {
		file, user string
		groups     []string
		certName   string
	}{
		{"admin.kubeconfig", "kubernetes-admin", []string{"system:masters"}, "admin"},
		// The controllers all use this identity (no per-controller service accounts, see
		// controllerManagerArgs), so it needs every controller's rights. It runs in this
		// process, which holds the etcd client key and the CA key anyway.
		{"controller-manager.kubeconfig", "system:kube-controller-manager", []string{"system:masters"}, "controller-manager"},
		// The scheduler shares the process too. As system:masters it needs no bootstrap
		// RBAC role, so it can start before the API server's RBAC bootstrap is done (see
		// rbacBootstrapCheck).
		{"scheduler.kubeconfig", "system:kube-scheduler", []string{"system:masters"}, "scheduler"},
	} {
		path := filepath.Join(cp.dataDir, k.file)
		if err := cp.pki.writeClientKubeconfig(path, local, k.user, k.groups,
			filepath.Join(pki, k.certName+".crt"), filepath.Join(pki, k.certName+".key")); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	cp.adminKubeconfig = filepath.Join(cp.dataDir, "admin.kubeconfig")
	rc, err := clientcmd.BuildConfigFromFlags("", cp.adminKubeconfig)
	if err != nil {
		return fmt.Errorf("load %s: %w", cp.adminKubeconfig, err)
	}
	cp.restConfig = rc
	return nil
}

// startAll starts the API server, waits for it to be ready, then starts the
// controller-manager and the scheduler, which need a serving API.
func (cp *ControlPlane) startAll(ctx context.Context) error {
	addrs := []string{net.JoinHostPort(cp.cfg.BindAddress, strconv.Itoa(cp.cfg.SecurePort))}
	if adv := cp.cfg.AdvertiseAddress.String(); adv != cp.cfg.BindAddress {
		addrs = append(addrs, net.JoinHostPort(adv, strconv.Itoa(cp.cfg.SecurePort)))
	}
	l, err := listenAll(addrs)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	api, err := cp.run("kube-apiserver", func(ctx context.Context) (func(context.Context) error, error) {
		return cp.startAPIServer(ctx, l)
	})
	if err != nil {
		l.Close()
		return err
	}
	if err := cp.waitReady(ctx, api); err != nil {
		return err
	}
	if _, err := cp.run("kube-controller-manager", cp.startControllerManager); err != nil {
		return err
	}
	if _, err := cp.run("kube-scheduler", cp.startScheduler); err != nil {
		return err
	}
	return nil
}

// run builds a component with its own context and runs it in a goroutine.
// A component that returns before its context is cancelled stops the
// whole control plane: a half-running control plane is worse than none.
func (cp *ControlPlane) run(name string, build func(context.Context) (func(context.Context) error, error)) (*component, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &component{name: name, cancel: cancel, done: make(chan struct{})}
	cp.mu.Lock()
	if cp.stopping {
		cp.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%s not started: the control plane is stopping", name)
	}
	cp.components = append(cp.components, c)
	cp.mu.Unlock()

	runFn, err := build(ctx)
	if err != nil {
		c.err = err
		close(c.done)
		return nil, err
	}
	cp.log.Debug("component starting", "name", name)
	go func() {
		defer close(c.done)
		c.err = runFn(ctx)
		if ctx.Err() == nil {
			if c.err == nil {
				c.err = errors.New("returned without being asked to stop")
			}
			cp.fail(fmt.Errorf("%s stopped: %w (see %s)", name, c.err, cp.logFile))
		}
	}()
	return c, nil
}

// rbacBootstrapCheck is the API server's health check for its post-start hook that creates
// the bootstrap RBAC roles. The hook sleeps a second before its first attempt (wait.Poll), so
// it is the last check to pass, a second after everything else. Nothing the control plane
// starts needs those roles: the controller-manager and the scheduler run as system:masters,
// nodes are authorized by the Node authorizer and knet's own ClusterRole, and the add-ons
// bring their own roles. So Start does not wait for it (the check still gates /readyz for
// everyone else), and the controller-manager's own wait for /healthz skips it too.
const rbacBootstrapCheck = "poststarthook/rbac/bootstrap-roles"

// waitReady waits until /readyz, less rbacBootstrapCheck, answers ok.
func (cp *ControlPlane) waitReady(ctx context.Context, api *component) error {
	client, err := kubernetes.NewForConfig(cp.restConfig)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for kube-apiserver /readyz: %w", context.Cause(ctx))
		case <-api.done:
			return fmt.Errorf("kube-apiserver exited while starting: %v (see %s)", api.err, cp.logFile)
		case <-cp.failed:
			return cp.Err()
		case <-deadline.C:
			return fmt.Errorf("kube-apiserver /readyz not ok after %s: %v (see %s)", readyTimeout, last, cp.logFile)
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").Param("exclude", rbacBootstrapCheck).DoRaw(rctx)
		cancel()
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
	}
}

// fail records the first fatal error and starts the shutdown.
func (cp *ControlPlane) fail(err error) {
	cp.failOnce.Do(func() {
		cp.mu.Lock()
		cp.err = err
		cp.mu.Unlock()
		close(cp.failed)
	})
}

// catchKlogExit turns klog.FlushAndExit / klog.Fatal, which the upstream
// components call on some internal errors, into a control-plane failure: the
// calling goroutine ends and the daemon sees Err instead of vanishing.
func (cp *ControlPlane) catchKlogExit() (restore func()) {
	prev := klog.OsExit
	klog.OsExit = func(code int) {
		cp.fail(fmt.Errorf("an upstream component asked to exit the process with code %d (see %s)", code, cp.logFile))
		runtime.Goexit()
	}
	return func() { klog.OsExit = prev }
}

// supervise waits for ctx or a failure, then stops everything in reverse
// start order.
func (cp *ControlPlane) supervise(ctx context.Context, logOut *os.File, restoreExit func()) {
	select {
	case <-ctx.Done():
		cp.log.Info("control plane stopping", "reason", context.Cause(ctx))
	case <-cp.failed:
		cp.log.Error("control plane failed, stopping", "err", cp.Err())
	case err := <-cp.etcd.Err():
		cp.fail(fmt.Errorf("etcd stopped: %w (see %s)", err, cp.logFile))
		cp.log.Error("control plane failed, stopping", "err", cp.Err())
	}

	cp.mu.Lock()
	cp.stopping = true
	comps := cp.components
	cp.mu.Unlock()

	// Clients of the API server first (they would only log errors while it
	// goes away), then the API server, then its storage.
	var clients []*component
	for _, c := range comps {
		if c.name != "kube-apiserver" {
			clients = append(clients, c)
		}
	}
	cp.stop(clients)
	for _, c := range comps {
		if c.name == "kube-apiserver" {
			cp.stop([]*component{c})
		}
	}
	stopped := make(chan struct{})
	go func() { cp.etcd.Close(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopTimeout):
		cp.log.Warn("etcd did not stop in time", "timeout", stopTimeout)
	}

	// Both components register a configz endpoint under a fixed name and
	// refuse to start if it exists, so a restart in this process needs them gone.
	configz.Delete(schedulerConfigzName)
	configz.Delete(kcmapp.ConfigzName)
	restoreExit()
	klog.Flush()
	logOut.Close()
	cp.log.Info("control plane stopped")
	close(cp.done)
}

func (cp *ControlPlane) stop(comps []*component) {
	for _, c := range comps {
		c.cancel()
	}
	timeout := time.After(stopTimeout)
	for _, c := range comps {
		select {
		case <-c.done:
		case <-timeout:
			cp.log.Warn("component did not stop in time", "name", c.name, "timeout", stopTimeout)
			return
		}
	}
}

// AdminKubeconfig is the path of a kubeconfig with cluster-admin rights
// (group system:masters) for https://BindAddress:SecurePort.
func (cp *ControlPlane) AdminKubeconfig() string { return cp.adminKubeconfig }

// RestConfig returns a copy of the admin client configuration.
func (cp *ControlPlane) RestConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// Done is closed once every component has stopped.
func (cp *ControlPlane) Done() <-chan struct{} { return cp.done }

// Err is why the control plane stopped on its own, or nil while it runs and
// after a stop requested through the Start context.
func (cp *ControlPlane) Err() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.err
}

// Stats are startup measurements.
type Stats struct {
	// Ready is the time from Start to the API server's /readyz answering ok.
	Ready time.Duration
	// RSSBytes is the process's resident set size right after that.
	RSSBytes int64
}

// Stats reports how long Start took and the process RSS at that moment.
func (cp *ControlPlane) Stats() Stats { return Stats{Ready: cp.readyIn, RSSBytes: cp.rss} }
