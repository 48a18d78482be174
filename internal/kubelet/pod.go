package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"

	"knet/internal/kubelet/podfiles"
)

// podWorker runs one pod from creation to removal. All mutable fields are
// guarded by mu; long operations (starting processes, CNI, waiting) run
// without it.
type podWorker struct {
	k   *Kubelet
	log *slog.Logger
	// Immutable identity of the pod.
	uid             types.UID
	namespace, name string
	restartPolicy   corev1.RestartPolicy
	dir             string // StateDir/pods/<uid>

	// deleting is closed when every container is to stop: the pod was
	// deleted, or its activeDeadlineSeconds passed.
	deleting  chan struct{}
	closeOnce sync.Once
	// deleted is closed when the pod was deleted (DeletePod): once it is
	// done, the kubelet forgets it.
	deleted     chan struct{}
	deletedOnce sync.Once
	// done is closed when every process stopped and the sandbox is gone.
	done chan struct{}
	// prev is a worker for an earlier pod with the same name that must be
	// gone before this one starts (StatefulSet pods keep their names).
	prev *podWorker

	// dirty wakes the status notifier.
	dirty chan struct{}
	// removed is closed when the kubelet forgot the pod.
	removed     chan struct{}
	removedOnce sync.Once

	// state is what the state file records (cleanupLeftovers reads it).
	stateMu sync.Mutex
	state   podState

	mu           sync.Mutex
	pod          *corev1.Pod // as given by CreatePod/UpdatePod (env resolved)
	grace        time.Duration
	sb           podSandbox
	att          *cniAttachment
	podIPs       []string
	sandboxReady bool
	startTime    time.Time
	init         []*containerRunner
	containers   []*containerRunner
	terminal     bool
	reason, msg  string
	lastStatus   *corev1.PodStatus
}

func newPodWorker(k *Kubelet, pod *corev1.Pod, prev *podWorker) *podWorker {
	w := &podWorker{
		k:             k,
		log:           k.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID),
		uid:           pod.UID,
		namespace:     pod.Namespace,
		name:          pod.Name,
		restartPolicy: pod.Spec.RestartPolicy,
		deleted:       make(chan struct{}),
		dir:           filepath.Join(k.cfg.podsDir(), string(pod.UID)),
		deleting:      make(chan struct{}),
		done:          make(chan struct{}),
		dirty:         make(chan struct{}, 1),
		removed:       make(chan struct{}),
		prev:          prev,
		pod:           pod.DeepCopy(),
	}
	for i := range pod.Spec.InitContainers {
		w.init = append(w.init, newContainerRunner(w, &pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		w.containers = append(w.containers, newContainerRunner(w, &pod.Spec.Containers[i], false))
	}
	reason := "ContainerCreating"
	if len(pod.Spec.InitContainers) > 0 {
		reason = "PodInitializing"
	}
	for _, c := range w.containers {
		c.rec.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason}
	}
	for _, c := range w.init {
		c.rec.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
	}
	return w
}

func (w *podWorker) isDeleting() bool {
	select {
	case <-w.deleting:
		return true
	default:
		return false
	}
}

// terminate stops the deleted pod, giving containers grace to exit.
func (w *podWorker) terminate(grace time.Duration) {
	w.stopAll(grace)
	w.deletedOnce.Do(func() { close(w.deleted) })
}

// stopAll stops every container; a shorter grace period than one given
// before wins, as for repeated deletes.
func (w *podWorker) stopAll(grace time.Duration) {
	w.mu.Lock()
	if !w.isDeleting() || grace < w.grace {
		w.grace = grace
	}
	w.mu.Unlock()
	w.closeOnce.Do(func() { close(w.deleting) })
}

func (w *podWorker) key() string { return w.namespace + "/" + w.name }

const reasonDeadlineExceeded = "DeadlineExceeded"

// enforceDeadline fails the pod when it has been active on the node for
// longer than spec.activeDeadlineSeconds (which updates may shorten).
func (w *podWorker) enforceDeadline() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-w.deleting:
			return
		case <-w.done:
			return
		case <-t.C:
		}
		w.mu.Lock()
		ads, start := w.pod.Spec.ActiveDeadlineSeconds, w.startTime
		w.mu.Unlock()
		if ads == nil || start.IsZero() || time.Since(start) < time.Duration(*ads)*time.Second {
			continue
		}
		w.setPodMessage(reasonDeadlineExceeded, "Pod was active on the node longer than the specified deadline")
		pod := w.snapshotPod()
		w.k.recorder.Event(pod, corev1.EventTypeNormal, reasonDeadlineExceeded, "Pod was active on the node longer than the specified deadline")
		w.stopAll(w.podGrace())
		return
	}
}

func (w *podWorker) gracePeriod() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.grace
}

// sleep waits d, returning false early when the pod is being deleted.
func (w *podWorker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.deleting:
		return false
	}
}

// changed marks the status dirty; the notifier sends it to the API server.
func (w *podWorker) changed() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// setPodCondition records a pod-level reason shown while the pod waits.
func (w *podWorker) setPodMessage(reason, msg string) {
	w.mu.Lock()
	w.reason, w.msg = reason, msg
	w.mu.Unlock()
	w.changed()
}

// run drives the pod: sandbox, network, init containers, containers, and
// teardown when they are all done or the pod is deleted.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	if w.prev != nil {
		select {
		case <-w.prev.done:
		case <-w.deleting:
		}
	}
	w.mu.Lock()
	w.startTime = time.Now()
	w.mu.Unlock()
	w.changed()
	go w.enforceDeadline()

	if err := w.setUp(ctx); err != nil {
		if !w.isDeleting() {
			w.log.Error("pod setup failed", "err", err)
		}
		w.finish(ctx)
		return
	}
	if w.runInitContainers(ctx) {
		var wg sync.WaitGroup
		for _, c := range w.containers {
			wg.Add(1)
			go func() { defer wg.Done(); c.supervise(ctx) }()
		}
		wg.Wait()
	}
	w.finish(ctx)
}

// setUp retries the sandbox setup until it succeeds or the pod is deleted,
// as the kubelet retries a failed sandbox creation.
func (w *podWorker) setUp(ctx context.Context) error {
	pod := w.snapshotPod()
	if !pod.Spec.HostNetwork {
		// Checking is cheap (a directory read), and the pod should start as soon as the
		// network is there; the event is repeated every 30s, not at every check.
		const poll = 200 * time.Millisecond
		for i := 0; !w.k.net.Ready(); i++ {
			if i%int(30*time.Second/poll) == 0 {
				w.k.recorder.Event(pod, corev1.EventTypeWarning, "NetworkNotReady",
					"network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
			}
			if !w.sleep(poll) {
				return errors.New("deleted while waiting for the network")
			}
		}
	}
	delay := time.Second
	for {
		err := w.createSandbox(ctx, pod)
		if err == nil {
			return nil
		}
		w.log.Warn("create pod sandbox", "err", err)
		w.k.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
		if !w.sleep(delay) {
			return err
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// createSandbox starts the sandbox and attaches it to the network; on any
// failure it undoes what it did.
func (w *podWorker) createSandbox(ctx context.Context, pod *corev1.Pod) (retErr error) {
	cfg := &w.k.cfg
	if err := podfiles.CheckHostname(pod, cfg.ClusterDomain); err != nil {
		return err
	}
	hostname := hostnameOf(pod, cfg.ClusterDomain)
	hostResolv, err := os.ReadFile(cfg.HostResolvConf)
	if err != nil {
		return fmt.Errorf("read host resolv.conf %s (Config.HostResolvConf): %w", cfg.HostResolvConf, err)
	}
	resolv, err := podfiles.ResolvConf(pod, podfiles.DNSConfig{
		ClusterDNS: cfg.ClusterDNS, ClusterDomain: cfg.ClusterDomain, HostResolvConf: hostResolv,
	})
	if err != nil {
		return fmt.Errorf("pod DNS configuration: %w", err)
	}
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		return fmt.Errorf("create pod directory: %w", err)
	}
	// /etc/hosts names the pod IP, which exists only after CNI ADD, so it
	// is a bind mount of a file we rewrite in place before any container runs.
	hostsPath := filepath.Join(w.dir, "etc-hosts")
	if err := os.WriteFile(hostsPath, nil, 0o644); err != nil {
		return fmt.Errorf("write pod hosts file: %w", err)
	}
	spec := sandboxSpec{
		ID:          sandboxID(pod.UID),
		Dir:         filepath.Join(w.dir, "sandbox"),
		Hostname:    hostname,
		HostNetwork: pod.Spec.HostNetwork,
		Files: []sandboxFile{
			{Path: "/etc/resolv.conf", Data: resolv, Mode: 0o644},
		},
		Mounts: []bindMount{{Source: hostsPath, Target: "/etc/hosts"}},
	}
	if !pod.Spec.HostNetwork {
		spec.Files = append(spec.Files, sandboxFile{Path: "/etc/hostname", Data: []byte(hostname + "\n"), Mode: 0o644})
	}
	spec.Mounts = append(spec.Mounts, imageMounts(pod, cfg.Images)...)

	if err := w.updateState(func(st *podState) {
		*st = podState{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
	}); err != nil {
		return err
	}
	// Volumes first: the sandbox's mount namespace is a copy of ours taken when it starts, so
	// tmpfs-backed volumes (secrets, projected tokens) must be mounted before, or containers
	// would see the empty directory under them.
	mounts, err := w.k.volumes.SetUp(ctx, pod)
	if err != nil {
		w.k.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed: %v", err)
		return fmt.Errorf("set up volumes: %w", err)
	}
	sb, err := w.k.rt.StartSandbox(ctx, spec)
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	defer func() {
		if retErr != nil {
			if err := sb.Remove(); err != nil {
				w.log.Warn("remove sandbox after failed setup", "err", err)
			}
		}
	}()
	if err := w.updateState(func(st *podState) { st.Holder = newProcessID(sb.HolderPID()) }); err != nil {
		return err
	}

	podIPs := hostIPs(cfg.NodeIP)
	var att *cniAttachment
	if !pod.Spec.HostNetwork {
		att = &cniAttachment{
			ContainerID:  sandboxID(pod.UID),
			NetNS:        sb.NetNSPath(),
			Namespace:    pod.Namespace,
			Name:         pod.Name,
			UID:          string(pod.UID),
			PortMappings: hostPortMappings(pod),
		}
		if err := w.updateState(func(st *podState) { st.CNI = att }); err != nil {
			return err
		}
		ips, err := w.k.net.Setup(ctx, *att)
		if err != nil {
			if derr := w.k.net.Teardown(context.WithoutCancel(ctx), *att); derr != nil {
				w.log.Warn("CNI DEL after failed ADD", "err", derr)
			}
			return err
		}
		podIPs = ips
		defer func() {
			if retErr != nil {
				if err := w.k.net.Teardown(context.WithoutCancel(ctx), *att); err != nil {
					w.log.Warn("CNI DEL after failed setup", "err", err)
				}
			}
		}()
	}
	hostHosts, _ := os.ReadFile("/etc/hosts")
	hosts := podfiles.Hosts(pod, podIPs, hostHosts, cfg.ClusterDomain)
	if err := rewriteInPlace(hostsPath, hosts); err != nil {
		return fmt.Errorf("write pod hosts file: %w", err)
	}
	w.mu.Lock()
	w.sb, w.att, w.podIPs, w.sandboxReady = sb, att, podIPs, true
	for _, c := range append(append([]*containerRunner(nil), w.init...), w.containers...) {
		c.volumeMounts = mounts[c.spec.Name]
	}
	w.mu.Unlock()
	w.changed()
	w.log.Info("pod sandbox ready", "podIPs", podIPs)
	return nil
}

// rewriteInPlace truncates and writes path without replacing its inode, so
// bind mounts of it see the new content.
func rewriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sandboxID is the stable id of a pod's sandbox, also its CNI container ID.
func sandboxID(uid types.UID) string {
	return strings.ReplaceAll(string(uid), "-", "")
}

func hostPortMappings(pod *corev1.Pod) []portMapping {
	var out []portMapping
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			out = append(out, portMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
		}
	}
	return out
}

// imageMounts bind-mounts each mapped image's binary, once per path.
func imageMounts(pod *corev1.Pod, images ImageMap) []bindMount {
	seen := map[string]bool{}
	var out []bindMount
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		img, ok := images.Lookup(c.Image)
		if !ok || img.Binary == "" || seen[img.Path] {
			continue
		}
		seen[img.Path] = true
		out = append(out, bindMount{Source: img.Binary, Target: img.Path, ReadOnly: true})
		for src, dst := range img.Files {
			out = append(out, bindMount{Source: src, Target: dst, ReadOnly: true})
		}
	}
	return out
}

// runInitContainers runs init containers in order. It returns false when
// the pod must not go on to its containers (an init container failed for
// good, or the pod is being deleted).
func (w *podWorker) runInitContainers(ctx context.Context) bool {
	for _, c := range w.init {
		if w.isDeleting() {
			return false
		}
		if c.sidecar {
			w.mu.Lock()
			c.launched = true
			w.mu.Unlock()
			go c.supervise(ctx)
			if !c.waitStarted(w.deleting) {
				return false
			}
			continue
		}
		if !c.runToCompletion(ctx) {
			return false
		}
	}
	return !w.isDeleting()
}

// finish stops what still runs (sidecars after the main containers), tears
// down the network and the sandbox, and reports the final status. The pod
// directory (logs) stays until the pod is removed.
func (w *podWorker) finish(ctx context.Context) {
	for i := len(w.init) - 1; i >= 0; i-- {
		w.init[i].stop()
	}
	for _, c := range w.init {
		c.waitExited()
	}
	w.mu.Lock()
	sb, att := w.sb, w.att
	w.sandboxReady = false
	w.terminal = true
	w.mu.Unlock()
	if att != nil {
		if err := w.k.net.Teardown(context.WithoutCancel(ctx), *att); err != nil {
			w.log.Warn("CNI DEL", "err", err)
		}
	}
	if sb != nil {
		if err := sb.Remove(); err != nil {
			w.log.Warn("remove sandbox", "err", err)
		}
	}
	if err := w.k.volumes.TearDown(w.uid); err != nil {
		w.log.Warn("tear down volumes", "err", err)
	}
	w.changed()
	w.log.Info("pod finished", "deleted", w.isDeleting())
}

func (w *podWorker) snapshotPod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod.DeepCopy()
}

// update applies a pod update from the API server: only metadata and the
// few mutable spec fields matter to a running pod.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	p := w.pod.DeepCopy()
	p.ObjectMeta = *pod.ObjectMeta.DeepCopy()
	p.Spec.ActiveDeadlineSeconds = pod.Spec.ActiveDeadlineSeconds
	w.pod = p
	w.mu.Unlock()
	w.changed()
}

// computeStatus returns the pod with its current status, and whether the
// status differs from the one computed last.
func (w *podWorker) computeStatus() (*corev1.Pod, bool) {
	api := w.apiPod()
	w.mu.Lock()
	defer w.mu.Unlock()
	rec := podRecord{
		Pod:          api,
		HostIPs:      hostIPs(w.k.cfg.NodeIP),
		PodIPs:       append([]string(nil), w.podIPs...),
		StartTime:    w.startTime,
		SandboxReady: w.sandboxReady,
		Terminal:     w.terminal,
		Reason:       w.reason,
		Message:      w.msg,
		Prev:         w.lastStatus,
	}
	for _, c := range w.init {
		rec.Init = append(rec.Init, c.rec)
	}
	for _, c := range w.containers {
		rec.Containers = append(rec.Containers, c.rec)
	}
	st := podStatus(rec, time.Now())
	changed := w.lastStatus == nil || !equality.Semantic.DeepEqual(*w.lastStatus, st)
	w.lastStatus = st.DeepCopy()
	pod := w.pod.DeepCopy()
	pod.Status = st
	return pod, changed
}

// closeRemoved ends the worker's notifier.
func (w *podWorker) closeRemoved() { w.removedOnce.Do(func() { close(w.removed) }) }

func hostnameOf(pod *corev1.Pod, clusterDomain string) string {
	if pod.Spec.HostNetwork {
		h, _ := os.Hostname()
		return h
	}
	h, _ := podfiles.Hostname(pod, clusterDomain)
	return h
}
