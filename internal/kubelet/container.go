package kubelet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerRunner runs the attempts of one container. rec, proc and the
// flags are guarded by the pod worker's mu.
type containerRunner struct {
	w       *podWorker
	spec    corev1.Container
	isInit  bool
	sidecar bool

	volumeMounts []bindMount
	rec          containerRecord
	proc         containerProcess
	env          []string
	attempt      int
	backoff      restartBackoff

	// started is closed when the first attempt passed its startup probe
	// (sidecars gate the next init container on it).
	started     chan struct{}
	startedOnce sync.Once
	// exited is closed when the runner will start no more attempts.
	exited     chan struct{}
	exitedOnce sync.Once
	// kill asks the running attempt to stop (liveness failure).
	kill chan string
	// launched is set once a goroutine runs the container's attempts.
	launched bool
	// stopCh stops a sidecar when the main containers are done.
	stopCh   chan struct{}
	stopOnce sync.Once
}

func newContainerRunner(w *podWorker, c *corev1.Container, isInit bool) *containerRunner {
	r := &containerRunner{
		w:       w,
		spec:    *c.DeepCopy(),
		isInit:  isInit,
		sidecar: isInit && isSidecar(c),
		started: make(chan struct{}),
		exited:  make(chan struct{}),
		kill:    make(chan string, 1),
		stopCh:  make(chan struct{}),
	}
	r.rec = containerRecord{Name: c.Name, Image: c.Image, ImageID: imageID(c.Image)}
	return r
}

func imageID(image string) string { return "knet-image://" + repository(image) }

// restartPolicy is the policy that applies to this container's exits.
func (c *containerRunner) restartPolicy() string {
	if c.sidecar {
		return "Always"
	}
	p := string(c.w.restartPolicy)
	if c.isInit && p == "Always" {
		// A failed init container is retried; one that succeeded is done.
		return "OnFailure"
	}
	return p
}

// stopping reports whether no new attempt may start.
func (c *containerRunner) stopping() bool {
	select {
	case <-c.w.deleting:
		return true
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

func (c *containerRunner) stop() { c.stopOnce.Do(func() { close(c.stopCh) }) }

func (c *containerRunner) markExited() { c.exitedOnce.Do(func() { close(c.exited) }) }

// waitExited waits for a sidecar supervisor (or nothing, for a runner that
// never started).
func (c *containerRunner) waitExited() {
	c.w.mu.Lock()
	launched := c.launched
	c.w.mu.Unlock()
	if launched {
		<-c.exited
	}
}

func (c *containerRunner) waitStarted(abort <-chan struct{}) bool {
	for {
		select {
		case <-c.started:
			return true
		case <-abort:
			return false
		case <-c.exited:
			return false
		}
	}
}

// supervise runs attempts until the restart policy says stop.
func (c *containerRunner) supervise(ctx context.Context) {
	defer c.markExited()
	for !c.stopping() {
		code, ranFor, ok := c.runOnce(ctx)
		if !ok || c.stopping() || !shouldRestart(c.restartPolicy(), int32(code)) {
			return
		}
		if !c.waitBackoff(ranFor) {
			return
		}
	}
}

// runToCompletion runs an init container until it succeeds. It returns
// false when the pod cannot go on.
func (c *containerRunner) runToCompletion(ctx context.Context) bool {
	defer c.markExited()
	for !c.stopping() {
		code, ranFor, ok := c.runOnce(ctx)
		if !ok {
			return false
		}
		if code == 0 {
			return true
		}
		if c.stopping() || !shouldRestart(c.restartPolicy(), int32(code)) {
			return false
		}
		if !c.waitBackoff(ranFor) {
			return false
		}
	}
	return false
}

// waitBackoff shows CrashLoopBackOff while waiting to restart.
func (c *containerRunner) waitBackoff(ranFor time.Duration) bool {
	d := c.backoff.next(ranFor)
	if d == 0 {
		return true
	}
	w := c.w
	pod := w.snapshotPod()
	msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", d, c.spec.Name, pod.Name, pod.Namespace, pod.UID)
	w.mu.Lock()
	c.rec.LastState = c.rec.State
	c.rec.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: msg}}
	w.mu.Unlock()
	w.changed()
	w.k.recorder.Eventf(pod, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", c.spec.Name, podKey(pod))
	select {
	case <-time.After(d):
		return true
	case <-c.w.deleting:
		return false
	case <-c.stopCh:
		return false
	}
}

// fieldPath is the event's involved object field, as the kubelet sets it.
func (c *containerRunner) fieldPath() string {
	if c.isInit {
		return fmt.Sprintf("spec.initContainers{%s}", c.spec.Name)
	}
	return fmt.Sprintf("spec.containers{%s}", c.spec.Name)
}

func (c *containerRunner) event(typ, reason, format string, args ...any) {
	ref := &corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: c.w.namespace, Name: c.w.name, UID: c.w.uid,
		FieldPath: c.fieldPath(),
	}
	c.w.k.recorder.Eventf(ref, typ, reason, format, args...)
}

// logPath is the log file of one attempt.
func (c *containerRunner) logPath(attempt int) string {
	return filepath.Join(c.w.dir, "logs", c.spec.Name, strconv.Itoa(attempt)+".log")
}

func newContainerID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kubernetesServiceWait bounds how long a container waits for the default/kubernetes Service
// before it starts without its variables (see awaitKubernetesService).
const kubernetesServiceWait = 30 * time.Second

// awaitKubernetesService holds the container until the kubelet knows the default/kubernetes
// Service. The API server publishes that Service only once it is fully ready, while a new
// cluster's nodes take pods a second or more before that; a container started in between
// gets no KUBERNETES_SERVICE_HOST, and in-cluster clients fail for the life of the process.
// It returns false when the pod is deleted or the container stopped while waiting.
func (c *containerRunner) awaitKubernetesService() bool {
	src := c.w.k.envSources
	if src.KubernetesServiceKnown() {
		return true
	}
	c.w.k.log.Info("waiting for the kubernetes Service before starting a container",
		"pod", c.w.namespace+"/"+c.w.name, "container", c.spec.Name)
	deadline := time.After(kubernetesServiceWait)
	for !src.KubernetesServiceKnown() {
		select {
		case <-c.w.deleting:
			return false
		case <-c.stopCh:
			return false
		case <-deadline:
			c.w.k.log.Warn("starting a container without the kubernetes Service's variables",
				"pod", c.w.namespace+"/"+c.w.name, "container", c.spec.Name, "waited", kubernetesServiceWait)
			return true
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// configRetryMax caps the wait between attempts to build a container's environment and
// command, as the kubelet's pod worker retries a failed sync every 10 s.
const configRetryMax = 10 * time.Second

// runOnce runs one attempt. It returns the exit code and how long the
// attempt ran; ok is false when no attempt could be started and waiting
// is all that is left (the pod is deleted, or its config is unusable).
func (c *containerRunner) runOnce(ctx context.Context) (code int, ranFor time.Duration, ok bool) {
	w := c.w
	pod := w.snapshotPod()
	img, mapped := w.k.cfg.Images.Lookup(c.spec.Image)

	w.mu.Lock()
	podIPs := append([]string(nil), w.podIPs...)
	sb := w.sb
	mounts := append([]bindMount(nil), c.volumeMounts...)
	w.mu.Unlock()

	if !c.awaitKubernetesService() {
		return 0, 0, false
	}
	var envMap map[string]string
	var argv []string
	for retry := time.Second; ; retry = min(2*retry, configRetryMax) {
		var err error
		envMap, err = resolveEnv(envInputs{Pod: pod, Container: &c.spec, PodIPs: podIPs,
			HostIPs: hostIPs(w.k.cfg.NodeIP), Allocatable: w.k.allocatable()}, w.k.envSources)
		if err == nil {
			argv, err = containerArgv(&c.spec, img, mapped, envMap)
		}
		if err == nil {
			break
		}
		w.mu.Lock()
		c.rec.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}}
		w.mu.Unlock()
		w.changed()
		c.event(corev1.EventTypeWarning, "Failed", "Error: %v", err)
		// Like the kubelet's pod worker, try again later: the ConfigMap or Secret a variable
		// refers to may be created after the pod.
		select {
		case <-w.deleting:
			return 0, 0, false
		case <-c.stopCh:
			return 0, 0, false
		case <-time.After(retry):
		}
		pod = w.snapshotPod()
	}
	if mapped {
		c.event(corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine (mapped by knet)", c.spec.Image)
	}

	w.mu.Lock()
	attempt := c.attempt
	c.attempt++
	w.mu.Unlock()
	// A kill request from the previous attempt's probes must not hit this one.
	select {
	case <-c.kill:
	default:
	}

	logPath := c.logPath(attempt)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return c.startFailed(fmt.Errorf("create log directory: %w", err), attempt)
	}
	if c.spec.TerminationMessagePath != "" {
		tm := c.terminationMessageFile()
		if err := os.MkdirAll(filepath.Dir(tm), 0o755); err != nil {
			return c.startFailed(fmt.Errorf("create termination message directory: %w", err), attempt)
		}
		if err := os.WriteFile(tm, nil, 0o666); err != nil {
			return c.startFailed(fmt.Errorf("create termination message file: %w", err), attempt)
		}
		_ = os.Chmod(tm, 0o666) // the container may run as any user
		mounts = append(mounts, bindMount{Source: tm, Target: c.spec.TerminationMessagePath})
	}
	user, err := containerUser(pod, &c.spec)
	if err != nil {
		return c.startFailed(err, attempt)
	}
	env := envList(envMap, hostnameOf(pod, w.k.cfg.ClusterDomain))
	spec := containerSpec{
		Name:       c.spec.Name,
		Args:       argv,
		Env:        env,
		WorkingDir: c.spec.WorkingDir,
		Mounts:     mounts,
		User:       user,
		LogPath:    logPath,
		Stdin:      c.spec.Stdin,
		TTY:        c.spec.TTY,
	}
	id := newContainerID()
	c.event(corev1.EventTypeNormal, "Created", "Created container: %s", c.spec.Name)
	proc, err := sb.StartContainer(spec)
	if err != nil {
		return c.startFailed(err, attempt)
	}
	startedAt := time.Now()
	if pid := newProcessID(proc.PID()); pid != nil {
		if err := w.updateState(func(st *podState) {
			if st.Containers == nil {
				st.Containers = map[string]processID{}
			}
			st.Containers[c.spec.Name] = *pid
		}); err != nil {
			w.log.Warn("record container process", "err", err)
		}
	}
	hasStartup := c.spec.StartupProbe != nil
	w.mu.Lock()
	c.proc = proc
	c.env = env
	if attempt > 0 {
		c.rec.RestartCount++
		if c.rec.State.Terminated != nil {
			c.rec.LastState = c.rec.State
		}
	}
	c.rec.ContainerID = "knet://" + id
	w.mu.Unlock()

	attemptCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// As in the kubelet, the container counts as running (and started, ready, and the next
	// container may start) only once its postStart hook has completed.
	if c.spec.Lifecycle != nil && c.spec.Lifecycle.PostStart != nil {
		if err := c.runHook(attemptCtx, c.spec.Lifecycle.PostStart, proc, podIPs); err != nil {
			c.event(corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: %v", err)
			c.killProcess(proc, c.w.podGrace(), false)
			return c.exited_(proc, attempt, startedAt)
		}
	}
	w.mu.Lock()
	c.rec.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(startedAt)}}
	c.rec.Started = !hasStartup
	c.rec.StartedOnce = c.rec.StartedOnce || !hasStartup
	c.rec.Ready = !hasStartup && c.spec.ReadinessProbe == nil && (!c.isInit || c.sidecar)
	w.mu.Unlock()
	w.changed()
	c.event(corev1.EventTypeNormal, "Started", "Started container %s", c.spec.Name)
	if !hasStartup {
		c.startedOnce.Do(func() { close(c.started) })
	}
	w.log.Info("container started", "container", c.spec.Name, "attempt", attempt, "pid", proc.PID())

	go c.probe(attemptCtx, proc, podIPs)

	// Sidecars outlive the main containers: they stop when finish() says
	// so, not as soon as the pod is deleted.
	deleting := w.deleting
	if c.sidecar {
		deleting = nil
	}
	select {
	case <-proc.Done():
	case <-deleting:
		c.event(corev1.EventTypeNormal, "Killing", "Stopping container %s", c.spec.Name)
		c.killProcess(proc, w.gracePeriodOr(w.podGrace()), true)
	case <-c.stopCh:
		c.event(corev1.EventTypeNormal, "Killing", "Stopping container %s", c.spec.Name)
		c.killProcess(proc, w.gracePeriodOr(w.podGrace()), true)
	case why := <-c.kill:
		c.event(corev1.EventTypeNormal, "Killing", "Container %s %s, will be restarted", c.spec.Name, why)
		c.killProcess(proc, c.probeGrace(), true)
	}
	cancel()
	return c.exited_(proc, attempt, startedAt)
}

// exited_ records how an attempt ended.
func (c *containerRunner) exited_(proc containerProcess, attempt int, startedAt time.Time) (int, time.Duration, bool) {
	<-proc.Done()
	st := proc.ExitStatus()
	w := c.w
	if err := w.updateState(func(st *podState) { delete(st.Containers, c.spec.Name) }); err != nil {
		w.log.Warn("record container exit", "err", err)
	}
	term := &corev1.ContainerStateTerminated{
		ExitCode:   int32(st.Code),
		Signal:     int32(st.Signal),
		StartedAt:  metav1.NewTime(firstNonZero(st.StartedAt, startedAt)),
		FinishedAt: metav1.NewTime(firstNonZero(st.FinishedAt, time.Now())),
		Reason:     "Completed",
	}
	if st.Code != 0 {
		term.Reason = "Error"
	}
	if st.Err != nil {
		term.Reason, term.Message = "StartError", st.Err.Error()
		if term.ExitCode == 0 {
			term.ExitCode = 128
		}
	}
	if msg := c.terminationMessage(attempt, st.Code); msg != "" {
		term.Message = msg
	}
	w.mu.Lock()
	c.proc = nil
	term.ContainerID = c.rec.ContainerID
	c.rec.State = corev1.ContainerState{Terminated: term}
	c.rec.Ready = false
	c.rec.Started = false
	w.mu.Unlock()
	w.changed()
	w.log.Info("container exited", "container", c.spec.Name, "attempt", attempt, "exitCode", st.Code, "signal", int(st.Signal))
	return int(term.ExitCode), term.FinishedAt.Sub(term.StartedAt.Time), true
}

func firstNonZero(a, b time.Time) time.Time {
	if a.IsZero() {
		return b
	}
	return a
}

// startFailed records an attempt that never ran its program.
func (c *containerRunner) startFailed(err error, attempt int) (int, time.Duration, bool) {
	w := c.w
	now := metav1.Now()
	c.event(corev1.EventTypeWarning, "Failed", "Error: %v", err)
	w.mu.Lock()
	if attempt > 0 {
		c.rec.RestartCount++
		if c.rec.State.Terminated != nil {
			c.rec.LastState = c.rec.State
		}
	}
	c.rec.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
	}}
	c.rec.Ready = false
	w.mu.Unlock()
	w.changed()
	w.log.Warn("container start failed", "container", c.spec.Name, "err", err)
	return 128, 0, true
}

// killProcess stops an attempt: preStop hook, SIGTERM, and SIGKILL when
// the grace period ends.
func (c *containerRunner) killProcess(proc containerProcess, grace time.Duration, preStop bool) {
	deadline := time.Now().Add(grace)
	if preStop && c.spec.Lifecycle != nil && c.spec.Lifecycle.PreStop != nil {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		c.w.mu.Lock()
		podIPs := append([]string(nil), c.w.podIPs...)
		c.w.mu.Unlock()
		if err := c.runHook(ctx, c.spec.Lifecycle.PreStop, proc, podIPs); err != nil {
			c.event(corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
		}
		cancel()
	}
	select {
	case <-proc.Done():
		return
	default:
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		c.w.log.Debug("SIGTERM", "container", c.spec.Name, "err", err)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-proc.Done():
		return
	case <-t.C:
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		c.w.log.Debug("SIGKILL", "container", c.spec.Name, "err", err)
	}
	<-proc.Done()
}

// terminationMessageFile is the host file bind-mounted at the container's
// terminationMessagePath.
func (c *containerRunner) terminationMessageFile() string {
	return filepath.Join(c.w.dir, "termination", c.spec.Name)
}

// terminationMessage reads the container's termination message, falling
// back to the end of its log when the policy says so.
func (c *containerRunner) terminationMessage(attempt, code int) string {
	const maxBytes = 4096
	if c.spec.TerminationMessagePath != "" {
		if b, err := readTail(c.terminationMessageFile(), maxBytes, 0); err == nil && len(b) > 0 {
			return string(b)
		}
	}
	if c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && code != 0 {
		if b, err := readTail(c.logPath(attempt), 2048, 80); err == nil {
			return string(b)
		}
	}
	return ""
}

func (c *containerRunner) probeGrace() time.Duration {
	for _, p := range []*corev1.Probe{c.spec.LivenessProbe, c.spec.StartupProbe} {
		if p != nil && p.TerminationGracePeriodSeconds != nil {
			return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
		}
	}
	return c.w.podGrace()
}

// podGrace is the pod's terminationGracePeriodSeconds (default 30s).
func (w *podWorker) podGrace() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return 30 * time.Second
}

// gracePeriodOr returns the deletion grace period once the pod is being
// deleted, def otherwise.
func (w *podWorker) gracePeriodOr(def time.Duration) time.Duration {
	if w.isDeleting() {
		return w.gracePeriod()
	}
	return def
}

// containerUser applies runAsUser/runAsGroup/supplementalGroups/fsGroup
// (container level wins over pod level). nil means run as root.
func containerUser(pod *corev1.Pod, c *corev1.Container) (*userSpec, error) {
	var uid, gid *int64
	var groups []int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
		groups = append(groups, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			groups = append(groups, *psc.FSGroup)
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if uid == nil && gid == nil && len(groups) == 0 {
		return nil, nil
	}
	u := &userSpec{}
	if uid != nil {
		if *uid < 0 || *uid > 1<<32-2 {
			return nil, fmt.Errorf("runAsUser %d out of range", *uid)
		}
		u.UID = uint32(*uid)
	}
	if gid != nil {
		if *gid < 0 || *gid > 1<<32-2 {
			return nil, fmt.Errorf("runAsGroup %d out of range", *gid)
		}
		u.GID = uint32(*gid)
	}
	for _, g := range groups {
		if g < 0 || g > 1<<32-2 {
			return nil, fmt.Errorf("supplemental group %d out of range", g)
		}
		u.Groups = append(u.Groups, uint32(g))
	}
	return u, nil
}

// envList renders the environment, sorted for reproducibility, with the
// variables a container runtime adds (PATH, HOSTNAME) when unset.
func envList(env map[string]string, hostname string) []string {
	out := make([]string, 0, len(env)+2)
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if _, ok := env["HOSTNAME"]; !ok && hostname != "" {
		out = append(out, "HOSTNAME="+hostname)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}
