package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
)

// Kubelet runs the pods bound to one node. Create it with New, then Run.
type Kubelet struct {
	cfg     Config
	log     *slog.Logger
	rt      runtimeService
	net     network
	volumes volumeManager

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	// podLister is the node's pod informer cache, set when virtual-kubelet
	// creates the provider; nil in tests without an API server.
	podLister  corev1listers.PodLister
	envSources envSources

	mu           sync.Mutex
	pods         map[string]*podWorker // by namespace/name
	notifyPod    func(*corev1.Pod)
	shuttingDown bool
	runCtx       context.Context
	workers      sync.WaitGroup

	nodeMu     sync.Mutex
	nodeObj    *corev1.Node
	notifyNode func(*corev1.Node)
}

// volumeManager sets up a pod's volumes (package volume).
type volumeManager interface {
	SetUp(ctx context.Context, pod *corev1.Pod) (map[string][]bindMount, error)
	Refresh(ctx context.Context, pod *corev1.Pod) error
	TearDown(uid types.UID) error
}

// New checks cfg and prepares a Kubelet; it changes nothing on the host.
func New(cfg Config) (*Kubelet, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kubelet config: %w", err)
	}
	vm, err := newVolumeManager(&cfg)
	if err != nil {
		return nil, err
	}
	return newKubelet(cfg, newSandboxRuntime(&cfg), newCNINetwork(cfg.CNIConfDir, cfg.CNIBinDir, cfg.cniCacheDir()), vm), nil
}

func newKubelet(cfg Config, rt runtimeService, n network, vm volumeManager) *Kubelet {
	b := record.NewBroadcaster()
	return &Kubelet{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "kubelet", "node", cfg.NodeName),
		rt:          rt,
		net:         n,
		volumes:     vm,
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: cfg.NodeName}),
		pods:        map[string]*podWorker{},
		runCtx:      context.Background(),
		envSources:  noEnvSources{},
	}
}

// Run cleans up what a previous run left, registers the Node, serves the
// kubelet API and runs the node's pods until ctx ends. Pods are stopped
// when it returns (a restarted kubelet starts them again).
func (k *Kubelet) Run(ctx context.Context) error {
	for _, d := range []string{k.cfg.podsDir(), k.cfg.volumesDir(), k.cfg.cniCacheDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create kubelet state directory: %w", err)
		}
	}
	k.mu.Lock()
	k.runCtx = ctx
	k.mu.Unlock()
	k.cleanupLeftovers(ctx)

	opts := []nodeutil.NodeOpt{k.nodeConfig}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	if k.cfg.ServingCert != "" {
		opts = append(opts,
			nodeutil.AttachProviderRoutes(mux),
			nodeutil.WithTLSConfig(nodeutil.WithKeyPairFromPath(k.cfg.ServingCert, k.cfg.ServingKey), nodeutil.WithCAFromPath(k.cfg.ClientCA)),
		)
	}
	vk, err := nodeutil.NewNode(k.cfg.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		k.podLister = pc.Pods
		k.envSources = listerEnvSources{pc.ConfigMaps, pc.Secrets, pc.Services}
		return provider{k}, nodeProvider{k}, nil
	}, append(opts, func(c *nodeutil.NodeConfig) error {
		c.Handler = ttyWithoutStderr(mux)
		return nil
	})...)
	if err != nil {
		return fmt.Errorf("create virtual-kubelet node: %w", err)
	}
	k.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.cfg.Client.CoreV1().Events("")})
	defer k.broadcaster.Shutdown()

	go k.watchNetwork(ctx)
	k.log.Info("kubelet starting", "listen", k.cfg.ListenAddr)
	err = vk.Run(ctx)
	k.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("virtual-kubelet node: %w", err)
}

// nodeConfig is the virtual-kubelet NodeOpt: our Node object, client, and
// API server settings.
func (k *Kubelet) nodeConfig(c *nodeutil.NodeConfig) error {
	c.Client = k.cfg.Client
	c.NodeSpec = *k.initialNode()
	c.HTTPListenAddr = k.cfg.ListenAddr
	c.EventRecorder = quietRecorder{k.recorder}
	c.NumWorkers = max(runtime.NumCPU(), 4)
	c.StreamIdleTimeout = 4 * time.Hour
	c.StreamCreationTimeout = 30 * time.Second
	c.InformerResyncPeriod = time.Minute
	// The kubelet resolves env itself, after CNI, so status.podIP and friends have values
	// (virtual-kubelet's resolver fails on them and would leave such pods Pending).
	c.SkipDownwardAPIResolution = true
	return nil
}

// shutdown stops every pod quickly: a restarted kubelet cleans up and
// starts them again anyway.
func (k *Kubelet) shutdown() {
	k.mu.Lock()
	k.shuttingDown = true
	workers := make([]*podWorker, 0, len(k.pods))
	for _, w := range k.pods {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	for _, w := range workers {
		w.terminate(2 * time.Second)
	}
	k.workers.Wait()
}

// startPod creates (or replaces) the worker of a pod.
func (k *Kubelet) startPod(pod *corev1.Pod) {
	key := podKey(pod)
	k.log.Debug("pod added", "pod", key, "uid", pod.UID)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.shuttingDown {
		return
	}
	prev := k.pods[key]
	if prev != nil && prev.uid == pod.UID {
		return
	}
	if prev != nil {
		// A new pod with the name of one still terminating: it starts when
		// the old one is gone.
		prev.terminate(prev.podGrace())
	}
	w := newPodWorker(k, pod, prev)
	k.pods[key] = w
	k.workers.Add(2)
	go func() { defer k.workers.Done(); w.run(k.runCtx) }()
	go func() { defer k.workers.Done(); k.reap(w) }()
	go k.notifier(w)
	w.changed()
}

// current reports whether w is the worker the kubelet has for its pod name.
func (k *Kubelet) current(w *podWorker) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[w.key()] == w
}

func (k *Kubelet) worker(namespace, name string) *podWorker {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[namespace+"/"+name]
}

// reap removes a pod once it finished and was deleted: it lets the API
// server delete the object (the kubelet's final say, as when containers
// are gone the grace period need not run out), then removes the pod's
// directory with its logs.
func (k *Kubelet) reap(w *podWorker) {
	<-w.done
	<-w.deleted
	k.mu.Lock()
	shutting := k.shuttingDown
	k.mu.Unlock()
	w.changed()
	if !shutting {
		k.deleteFromAPI(w)
	}
	if err := removeUnmounted(w.dir); err != nil {
		w.log.Warn("remove pod directory", "err", err)
	}
	k.mu.Lock()
	if k.pods[w.key()] == w {
		delete(k.pods, w.key())
	}
	k.mu.Unlock()
	w.closeRemoved()
}

// deleteFromAPI finishes a graceful deletion once the final status is
// written.
func (k *Kubelet) deleteFromAPI(w *podWorker) {
	if k.podLister == nil || k.cfg.Client == nil {
		return
	}
	ns, name := w.namespace, w.name
	deadline := time.Now().Add(3 * time.Second)
	for {
		p, err := k.podLister.Pods(ns).Get(name)
		if err != nil || p.UID != w.uid || p.DeletionTimestamp == nil {
			return // gone, replaced, or not being deleted by the API
		}
		if !anyRunning(p) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uid := w.uid
	err := k.cfg.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.log.Warn("delete pod from API server", "err", err)
	}
}

func anyRunning(p *corev1.Pod) bool {
	for _, s := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if s.State.Running != nil {
			return true
		}
	}
	return false
}

// notifier pushes the pod's status to virtual-kubelet whenever it changed,
// and refreshes volumes and readiness gates periodically.
func (k *Kubelet) notifier(w *podWorker) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	lastRefresh, lastNotify := time.Now(), time.Now()
	for {
		ticked := false
		select {
		case <-w.removed:
			return
		case <-w.dirty:
		case <-tick.C:
			ticked = true
			w.mu.Lock()
			running := w.sandboxReady && !w.terminal
			w.mu.Unlock()
			if running && time.Since(lastRefresh) >= 10*time.Second {
				lastRefresh = time.Now()
				if err := k.volumes.Refresh(k.runCtx, w.apiPod()); err != nil {
					w.log.Warn("refresh volumes", "err", err)
				}
			}
		}
		pod, changed := w.computeStatus()
		// Someone else rewrote our status in the API (see statusDrifted): write ours again.
		// Not right after a notify, while the API copy may still lag behind it.
		if !changed && ticked && time.Since(lastNotify) > 5*time.Second && k.current(w) && k.restoreStatus(w, pod) {
			lastNotify = time.Now()
		}
		if !changed || !k.current(w) {
			continue
		}
		k.mu.Lock()
		cb := k.notifyPod
		k.mu.Unlock()
		if cb != nil {
			cb(pod)
			lastNotify = time.Now()
		}
	}
}

// apiPod is the pod as the API server has it, or our copy without one.
func (w *podWorker) apiPod() *corev1.Pod {
	if l := w.k.podLister; l != nil {
		if p, err := l.Pods(w.namespace).Get(w.name); err == nil && p.UID == w.uid {
			return p
		}
	}
	return w.snapshotPod()
}

func podKey(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

func hostIPs(ip net.IP) []string {
	if ip == nil {
		return nil
	}
	return []string{ip.String()}
}
