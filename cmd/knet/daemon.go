package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/podutils"

	"knet/deploy"
	"knet/internal/cluster"
	"knet/internal/controlplane"
	"knet/internal/lbipam"
	"knet/internal/podnet"
)

// Progress protocol between the daemon and `knet up`: one line per step in <dir>/progress.
const (
	progressFile   = "progress"
	progressReady  = "ready"
	progressFailed = "failed: "
)

type daemonOptions struct {
	name       string
	manifests  []string
	imageMap   string
	podNetwork string
}

func daemonCommand() *cobra.Command {
	var o daemonOptions
	cmd := &cobra.Command{
		Use:    "daemon",
		Hidden: true,
		Short:  "Run a cluster in the foreground (what `knet up` starts in the background)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runDaemon(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.name, "name", cluster.DefaultName, "cluster name")
	cmd.Flags().StringArrayVarP(&o.manifests, "filename", "f", nil, "manifests to apply when ready")
	cmd.Flags().StringVar(&o.imageMap, "image-map", "", "image map file")
	cmd.Flags().StringVar(&o.podNetwork, "pod-network", "host-gw", "host-gw or vxlan")
	return cmd
}

// progress writes the step lines `knet up` prints, each with the seconds since the daemon
// started, so a slow start shows where its time went.
type progress struct {
	f     *os.File
	start time.Time
}

func (p progress) say(format string, args ...any) {
	fmt.Fprintf(p.f, "[%5.1fs] "+format+"\n", append([]any{time.Since(p.start).Seconds()}, args...)...)
}

// mark writes one of the protocol lines (progressReady, progressFailed...) as is.
func (p progress) mark(line string) { fmt.Fprintln(p.f, line) }

func runDaemon(ctx context.Context, o daemonOptions) (err error) {
	start := time.Now()
	l, err := cluster.LoadLayout(o.name)
	if err != nil {
		return err
	}
	lock, err := cluster.LockDaemon(l.Dir())
	if err != nil {
		return fmt.Errorf("cluster %q: %w", o.name, err)
	}
	// The lock lives as long as the daemon; keep the file reachable so no finalizer closes it.
	defer runtime.KeepAlive(lock)
	pf, err := os.OpenFile(filepath.Join(l.Dir(), progressFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer pf.Close()
	p := progress{f: pf, start: start}
	defer func() {
		if err != nil {
			p.mark(progressFailed + err.Error())
		}
	}()
	log := newLogger().With("cluster", l.Name)
	stopProfile := startupProfile(log)
	defer stopProfile()

	if err := cluster.SetupUnderlay(l); err != nil {
		return fmt.Errorf("set up the underlay: %w", err)
	}
	p.say("underlay %s on bridge %s, %d node namespaces", l.Underlay, l.Bridge, len(l.Nodes))
	cp, err := controlplane.New(controlplane.Config{
		DataDir:          filepath.Join(l.Dir(), "controlplane"),
		AdvertiseAddress: l.Gateway.AsSlice(),
		SecurePort:       l.APIPort,
		EtcdPort:         l.EtcdPort,
		ServiceCIDR:      l.ServiceCIDR.String(),
		ClusterCIDR:      l.PodCIDR.String(),
		NodeCIDRMaskSize: 24,
		Logger:           log,
	})
	if err != nil {
		return fmt.Errorf("prepare the control plane: %w", err)
	}
	// The node processes start with the control plane: loading the knet binary and setting up
	// a node take a few hundred milliseconds of their own, and each node waits for the API (see
	// waitForAPI) before it starts its informers.
	self, _ := os.Executable()
	cg, err := cluster.OpenCgroup(l.CgroupName())
	if err != nil {
		return err
	}
	for _, n := range l.Nodes {
		cfgPath, err := writeNodeConfig(l, n, cp, self, o.imageMap, o.podNetwork)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		np := &cluster.NodeProcess{Node: n, Binary: self, Args: []string{"node", "--config", cfgPath},
			LogDir: filepath.Join(l.Dir(), "logs"), PIDFile: filepath.Join(l.NodeDir(n.Name), "node.pid"), Cgroup: cg, Logger: log}
		go np.Run(ctx)
	}
	if err := cp.Start(ctx); err != nil {
		return fmt.Errorf("start the control plane: %w", err)
	}
	kubeconfig := filepath.Join(l.Dir(), "kubeconfig")
	if err := copyFile(cp.AdminKubeconfig(), kubeconfig); err != nil {
		return err
	}
	p.say("control plane ready at https://127.0.0.1:%d (kube-apiserver v1.35.4, etcd, controller-manager, scheduler)", l.APIPort)
	// client-go's default limit (5 QPS) would pace the daemon's own waits, the host routes and
	// the LoadBalancer allocator against each other; the API server is local and has its own
	// priority and fairness.
	rc := cp.RestConfig()
	rc.QPS, rc.Burst = 100, 200
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}

	// The add-ons need no Node to be created (they bring their own service accounts), so they
	// are applied while the nodes start; their pods are scheduled as soon as a node is Ready,
	// and the kubelet holds their containers until the API server has published the
	// kubernetes Service (see kubelet's awaitKubernetesService).
	addonsApplied := make(chan error, 1)
	go func() {
		err := applyAddons(ctx, rc)
		log.Info("add-ons applied", "seconds", fmt.Sprintf("%.2f", time.Since(start).Seconds()), "err", err)
		addonsApplied <- err
	}()
	if err := ensureNodeRBAC(ctx, client); err != nil {
		return err
	}
	routes, err := podnet.New(podnet.Config{Client: client, NodeName: "", Mode: podnet.ModeHostGW, Link: l.Bridge})
	if err != nil {
		return err
	}
	go func() {
		if err := routes.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("host routes to pod CIDRs stopped", "err", err)
		}
	}()
	if err := startLoadBalancerIPAM(ctx, log, rc, client, l); err != nil {
		return err
	}
	if err := waitNodesReady(ctx, client, l); err != nil {
		return err
	}
	p.say("%d nodes Ready", len(l.Nodes))
	if err := <-addonsApplied; err != nil {
		return err
	}
	if err := waitAddonsReady(ctx, client); err != nil {
		return err
	}
	p.say("add-ons Ready: knet-dns (kube-dns 10.96.0.10), knet-ingress (IngressClass knet), LoadBalancer pool %s", l.LBPool)
	if err := waitDefaultServiceAccount(ctx, client); err != nil {
		return err
	}
	for _, m := range o.manifests {
		out, err := exec.CommandContext(ctx, self, "kubectl", "--kubeconfig", kubeconfig, "apply", "-f", m).CombinedOutput()
		if err != nil {
			return fmt.Errorf("apply %s: %v\n%s", m, err, out)
		}
		p.say("applied %s", m)
	}
	p.mark(progressReady)
	stopProfile()
	<-ctx.Done()
	log.Info("stopping")
	select {
	case <-cp.Done():
	case <-time.After(10 * time.Second):
	}
	return nil
}

func waitNodesReady(ctx context.Context, client kubernetes.Interface, l cluster.Layout) error {
	want := map[string]bool{}
	for _, n := range l.Nodes {
		want[n.Name] = true
	}
	ready := 0
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		ready = 0
		if nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			for i := range nodes.Items {
				if want[nodes.Items[i].Name] && nodeReady(&nodes.Items[i]) {
					ready++
				}
			}
		}
		return ready == len(l.Nodes), nil
	})
	if err != nil {
		return fmt.Errorf("only %d of %d nodes became Ready (see %s/logs)", ready, len(l.Nodes), l.Dir())
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitDefaultServiceAccount waits for the service-account controller: until it made
// default/default, creating a pod in the default namespace fails.
func waitDefaultServiceAccount(ctx context.Context, client kubernetes.Interface) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the default service account was not created: %w", err)
	}
	return nil
}

func writeNodeConfig(l cluster.Layout, n cluster.NodeLayout, cp *controlplane.ControlPlane, self, imageMap, podNetwork string) (string, error) {
	creds, err := cp.NodeCredentials(n.Name, n.IP.AsSlice())
	if err != nil {
		return "", err
	}
	dir := l.NodeDir(n.Name)
	cfg := nodeConfig{
		NodeName:       n.Name,
		NodeIP:         n.IP.String(),
		Kubeconfig:     creds.Kubeconfig,
		ServingCert:    creds.ServingCert,
		ServingKey:     creds.ServingKey,
		ClientCA:       creds.ClientCA,
		StateDir:       dir,
		ClusterDNS:     []string{l.ClusterDNS.String()},
		ClusterDomain:  "cluster.local",
		PodNetworkMode: podNetwork,
		ClusterCIDR:    l.PodCIDR.String(),
		Underlay:       "eth0",
		ImageMap:       imageMap,
		Agnhost:        findAgnhost(self),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	path := filepath.Join(dir, "node.json")
	return path, os.WriteFile(path, b, 0o600)
}

// findAgnhost looks for the agnhost binary next to knet (where `make` puts it), then in PATH.
func findAgnhost(self string) string {
	if p := os.Getenv("KNET_AGNHOST"); p != "" {
		return p
	}
	near := filepath.Join(filepath.Dir(self), "agnhost")
	if _, err := os.Stat(near); err == nil {
		return near
	}
	if p, err := exec.LookPath("agnhost"); err == nil {
		return p
	}
	return ""
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// applyAddons server-side-applies the embedded add-on manifests as field manager "knet": first
// everything but the Deployments, then the Deployments (their pods need the service accounts),
// each wave concurrently. Applying in the daemon rather than through `knet kubectl apply` saves
// a second knet process, its discovery and its OpenAPI download while the cluster starts; a
// restart re-applies them, and Force takes over fields an earlier client-side apply owned.
func applyAddons(ctx context.Context, rc *rest.Config) error {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	objs, err := addonObjects()
	if err != nil {
		return err
	}
	var first, deployments []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			deployments = append(deployments, o)
		} else {
			first = append(first, o)
		}
	}
	for _, wave := range [][]*unstructured.Unstructured{first, deployments} {
		errs := make(chan error, len(wave))
		for _, o := range wave {
			go func() { errs <- applyObject(ctx, dyn, o) }()
		}
		for range wave {
			if err := <-errs; err != nil {
				return err
			}
		}
	}
	return nil
}

// addonObjects decodes the embedded add-on manifests.
func addonObjects() ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, name := range deploy.Addons {
		b, err := deploy.Files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("add-on manifest %s: %w", name, err)
			}
			if len(obj.Object) > 0 {
				objs = append(objs, obj)
			}
		}
	}
	return objs, nil
}

// applyObject applies one add-on object. The add-ons are built-in kinds whose resource is the
// lower-cased plural of the kind, and exactly the namespaced ones set metadata.namespace, so no
// discovery is needed (TestAddonObjectsMapToResources checks both).
func applyObject(ctx context.Context, dyn dynamic.Interface, obj *unstructured.Unstructured) error {
	gvr, _ := meta.UnsafeGuessKindToResource(obj.GroupVersionKind())
	res := dyn.Resource(gvr)
	var r dynamic.ResourceInterface = res
	if ns := obj.GetNamespace(); ns != "" {
		r = res.Namespace(ns)
	}
	if _, err := r.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "knet", Force: true}); err != nil {
		return fmt.Errorf("apply add-on %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

// waitAddonsReady waits until every add-on Deployment in kube-system has as many Ready pods as
// it wants replicas. It reads the pods rather than the Deployment's status, which trails them by
// the ReplicaSet and Deployment controllers' own status updates.
func waitAddonsReady(ctx context.Context, client kubernetes.Interface) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return addonsReady(ctx, client), nil
	})
	if err != nil {
		return fmt.Errorf("add-ons in kube-system not Ready (see `knet kubectl -n kube-system get pods`): %w", err)
	}
	return nil
}

func addonsReady(ctx context.Context, client kubernetes.Interface) bool {
	deps, err := client.AppsV1().Deployments("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil || len(deps.Items) == 0 {
		return false
	}
	pods, err := client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return false
	}
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil {
			return false
		}
		ready := int32(0)
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp == nil && sel.Matches(labels.Set(p.Labels)) && podutils.IsPodReady(p) {
				ready++
			}
		}
		if ready < want {
			return false
		}
	}
	return true
}

// startLoadBalancerIPAM runs the one LoadBalancer address allocator of the cluster, with the
// underlay's reserved range as the default pool.
func startLoadBalancerIPAM(ctx context.Context, log *slog.Logger, rc *rest.Config, client kubernetes.Interface, l cluster.Layout) error {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	ext, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return err
	}
	c, err := lbipam.NewController(lbipam.ControllerConfig{
		Client:        client,
		Dynamic:       dyn,
		APIExtensions: ext,
		DefaultPool:   []string{l.LBPool.String()},
		Recorder:      newRecorder(ctx, client, "knet-lbipam", ""),
		Logger:        log.With("component", "lbipam"),
	})
	if err != nil {
		return err
	}
	go func() {
		if err := c.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("LoadBalancer IPAM stopped", "err", err)
		}
	}()
	return nil
}

// startupProfile writes a CPU profile of the daemon's start (until the cluster is ready) to
// $KNET_DAEMON_CPUPROFILE when that is set: the start is what `knet up` waits for, and
// most of it is CPU spent in the upstream control plane. The returned stop is idempotent.
func startupProfile(log *slog.Logger) (stop func()) {
	path := os.Getenv("KNET_DAEMON_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Warn("no startup CPU profile", "path", path, "err", err)
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}
}
