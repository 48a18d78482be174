package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	cliflag "k8s.io/component-base/cli/flag"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// The components are configured through their own command-line flags, parsed
// into their upstream option structs, so each setting reads exactly like the
// kube-apiserver / kube-controller-manager / kube-scheduler documentation.
// Their cobra commands are not used: kube-apiserver's installs a signal
// handler when built and kube-scheduler's installs another when run, and both
// re-apply logging, which the daemon owns.

func parseFlags(component string, sets cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	for _, set := range sets.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags %q: %w", component, args, err)
	}
	return nil
}

func (cp *ControlPlane) apiserverArgs() []string {
	p, c := cp.pki, cp.cfg
	return []string{
		"--advertise-address=" + c.AdvertiseAddress.String(),
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.SecurePort),
		"--cert-dir=" + p.dir,
		"--tls-cert-file=" + p.apiserverCert,
		"--tls-private-key-file=" + p.apiserverKey,
		"--client-ca-file=" + p.ca.certFile,
		"--etcd-servers=https://127.0.0.1:" + strconv.Itoa(c.EtcdPort),
		"--etcd-cafile=" + p.etcd.certFile,
		"--etcd-certfile=" + p.etcdClientCert,
		"--etcd-keyfile=" + p.etcdClientKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		// NodeRestriction makes the Node authorizer's promise hold for
		// writes: a kubelet may only modify its own Node and its pods.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=lease",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.serviceAccountPub,
		"--service-account-signing-key-file=" + p.serviceAccountKey,
		"--kubelet-client-certificate=" + p.kubeletClientCert,
		"--kubelet-client-key=" + p.kubeletClientKey,
		// Kubelet serving certificates come from NodeCredentials, signed by
		// the cluster CA, so the API server can verify the kubelet it talks to.
		"--kubelet-certificate-authority=" + p.ca.certFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--proxy-client-cert-file=" + p.frontProxyClientCert,
		"--proxy-client-key-file=" + p.frontProxyClientKey,
		"--requestheader-client-ca-file=" + p.frontProxy.certFile,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--profiling=false",
	}
}

// startAPIServer builds kube-apiserver and returns its blocking run function.
// The listener serves both 127.0.0.1 and AdvertiseAddress.
func (cp *ControlPlane) startAPIServer(ctx context.Context, l net.Listener) (func(context.Context) error, error) {
	s := apiserveroptions.NewServerRunOptions()
	if err := parseFlags("kube-apiserver", s.Flags(), cp.apiserverArgs()); err != nil {
		return nil, err
	}
	s.SecureServing.Listener = l
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, fmt.Errorf("kube-apiserver feature gates: %w", err)
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	config, err := apiserverapp.NewConfig(completed)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	completedConfig, err := config.Complete()
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver config: %w", err)
	}
	server, err := apiserverapp.CreateServerChain(completedConfig)
	if err != nil {
		return nil, fmt.Errorf("create kube-apiserver: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		return nil, fmt.Errorf("prepare kube-apiserver: %w", err)
	}
	return prepared.Run, nil
}

func (cp *ControlPlane) controllerManagerArgs() []string {
	p, c := cp.pki, cp.cfg
	return []string{
		"--kubeconfig=" + filepath.Join(cp.dataDir, "controller-manager.kubeconfig"),
		// No HTTPS endpoint: nothing scrapes it, and it would listen on all
		// interfaces by default.
		"--secure-port=0",
		"--leader-elect=false",
		// Cloud controllers (service-lb, node-route, cloud-node-lifecycle)
		// skip themselves without a cloud provider.
		"--controllers=*",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + c.ClusterCIDR,
		"--node-cidr-mask-size=" + strconv.Itoa(c.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--configure-cloud-routes=false",
		// One identity for all controllers: per-controller credentials make the
		// manager get or create ~40 service accounts, one after the other,
		// before it starts any controller, node-ipam included, which every
		// Node waits for (~1 s of `knet up` at load 15). Separate identities
		// buy nothing here: the manager shares a process with the API server.
		"--use-service-account-credentials=false",
		// The default client limit (20 QPS, burst 30) throttles start-up and
		// paces a burst of pods. Everything runs in one process against a local
		// API server, which has its own priority and fairness.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
		"--root-ca-file=" + p.ca.certFile,
		"--service-account-private-key-file=" + p.serviceAccountKey,
		// Lets kubelets and users obtain certificates through CSRs.
		"--cluster-signing-cert-file=" + p.ca.certFile,
		"--cluster-signing-key-file=" + p.ca.keyFile,
		"--cluster-name=knet",
		"--profiling=false",
	}
}

func (cp *ControlPlane) startControllerManager(ctx context.Context) (func(context.Context) error, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager options: %w", err)
	}
	all, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	sets := s.Flags(all, disabled, aliases)
	if err := parseFlags("kube-controller-manager", sets, cp.controllerManagerArgs()); err != nil {
		return nil, err
	}
	s.ParsedFlags = &sets
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, fmt.Errorf("kube-controller-manager feature gates: %w", err)
	}
	c, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager config: %w", err)
	}
	// The manager polls /healthz once a second before it starts any controller; skip the RBAC
	// bootstrap check there, as Start does (see rbacBootstrapCheck).
	c.Kubeconfig.Wrap(func(rt http.RoundTripper) http.RoundTripper { return healthzExcluding{rt, rbacBootstrapCheck} })
	completed := c.Complete()
	return func(ctx context.Context) error { return kcmapp.Run(ctx, completed) }, nil
}

// healthzExcluding adds ?exclude=<check> to plain GET /healthz requests and passes every
// other request through unchanged.
type healthzExcluding struct {
	next  http.RoundTripper
	check string
}

func (h healthzExcluding) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.Path != "/healthz" || req.URL.RawQuery != "" {
		return h.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.URL.RawQuery = url.Values{"exclude": {h.check}}.Encode()
	return h.next.RoundTrip(req)
}

// writeSchedulerConfig writes a KubeSchedulerConfiguration because
// kube-scheduler no longer honours its deprecated --kubeconfig flag: the
// client connection can only be set through --config.
func (cp *ControlPlane) writeSchedulerConfig() (string, error) {
	path := filepath.Join(cp.dataDir, "scheduler-config.yaml")
	kubeconfig := filepath.Join(cp.dataDir, "scheduler.kubeconfig")
	data := strings.Join([]string{
		"apiVersion: kubescheduler.config.k8s.io/v1",
		"kind: KubeSchedulerConfiguration",
		"clientConnection:",
		"  kubeconfig: " + strconv.Quote(kubeconfig),
		// Its default (50 QPS, burst 100) paces a burst of pods at a binding and an event
		// each; as the controller-manager, it talks to a local API server with its own
		// priority and fairness.
		"  qps: 500",
		"  burst: 1000",
		"leaderElection:",
		"  leaderElect: false",
		"",
	}, "\n")
	if err := writeFileAtomic(path, []byte(data), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func (cp *ControlPlane) startScheduler(ctx context.Context) (func(context.Context) error, error) {
	configFile, err := cp.writeSchedulerConfig()
	if err != nil {
		return nil, err
	}
	opts := scheduleroptions.NewOptions()
	args := []string{"--config=" + configFile, "--secure-port=0"}
	if err := parseFlags("kube-scheduler", *opts.Flags, args); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, fmt.Errorf("kube-scheduler feature gates: %w", err)
	}
	cc, sched, err := schedulerapp.Setup(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("kube-scheduler setup: %w", err)
	}
	return func(ctx context.Context) error { return schedulerapp.Run(ctx, cc, sched) }, nil
}
