package kubelet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	utilexec "k8s.io/utils/exec"

	"knet/internal/sandbox"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "sandbox-holder":
			os.Exit(sandbox.HolderMain(os.Args[2:]))
		case "container-init":
			os.Exit(sandbox.ContainerInitMain(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

// recordingNetwork stands in for the CNI plugin: it hands out one IP and
// records that every attachment is detached again.
type recordingNetwork struct {
	notReady atomic.Bool
	mu       sync.Mutex
	attached map[string]cniAttachment
	adds     int
}

func (n *recordingNetwork) Ready() bool { return !n.notReady.Load() }

func (n *recordingNetwork) Setup(_ context.Context, a cniAttachment) ([]string, error) {
	if _, err := os.Stat(a.NetNS); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.attached[a.ContainerID] = a
	n.adds++
	return []string{"192.0.2.10"}, nil
}

func (n *recordingNetwork) Teardown(_ context.Context, a cniAttachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.attached, a.ContainerID)
	return nil
}

func (n *recordingNetwork) attachments() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.attached)
}

type noVolumes struct{}

func (noVolumes) SetUp(context.Context, *corev1.Pod) (map[string][]bindMount, error) { return nil, nil }
func (noVolumes) Refresh(context.Context, *corev1.Pod) error                         { return nil }
func (noVolumes) TearDown(types.UID) error                                           { return nil }

type testKubelet struct {
	*Kubelet
	net     *recordingNetwork
	indexer cache.Indexer
	events  chan string
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs pods in real sandboxes (namespaces, mounts)")
	}
	for _, bin := range []string{"nsenter", "unshare", "sh"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
}

// newTestKubelet is a Kubelet with real sandboxes, no API server and a
// recording network.
func newTestKubelet(t *testing.T) *testKubelet {
	requireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("search example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		NodeName:       "node-a",
		NodeIP:         net.ParseIP("192.0.2.1"),
		StateDir:       filepath.Join(dir, "state"),
		ClusterDNS:     []string{"10.96.0.10"},
		HostResolvConf: resolv,
		HelperBinary:   exe,
		Images:         DefaultImages(exe, ""),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	cfg.Defaults()
	n := &recordingNetwork{attached: map[string]cniAttachment{}}
	k := newKubelet(cfg, newSandboxRuntime(&cfg), n, noVolumes{})
	events := make(chan string, 1000)
	k.recorder = &record.FakeRecorder{Events: events}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	k.podLister = corev1listers.NewPodLister(indexer)
	if err := os.MkdirAll(cfg.podsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.shutdown()
		if got := n.attachments(); got != 0 {
			t.Errorf("%d pod network attachments left after shutdown", got)
		}
	})
	return &testKubelet{Kubelet: k, net: n, indexer: indexer, events: events}
}

// run creates the pod as the API server and virtual-kubelet would.
func (tk *testKubelet) run(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := tk.indexer.Add(pod); err != nil {
		t.Fatal(err)
	}
	if err := (provider{tk.Kubelet}).CreatePod(context.Background(), pod.DeepCopy()); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the pod's status until cond holds.
func (tk *testKubelet) waitFor(t *testing.T, pod *corev1.Pod, what string, timeout time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *corev1.Pod
	for time.Now().Before(deadline) {
		if w := tk.worker(pod.Namespace, pod.Name); w != nil {
			last, _ = w.computeStatus()
			if cond(last) {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("timed out waiting for %s; last status: phase %s, containers %+v, init %+v", what, last.Status.Phase, last.Status.ContainerStatuses, last.Status.InitContainerStatuses)
	}
	t.Fatalf("timed out waiting for %s: pod unknown", what)
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func newTestPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name + "-" + randHex())},
		Spec: corev1.PodSpec{
			NodeName:                      "node-a",
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptrTo(int64(5)),
		},
	}
}

func randHex() string { return newContainerID()[:8] }

func ptrTo[T any](v T) *T { return &v }

type bufIO struct {
	stdin          io.Reader
	stdout, stderr *closeBuffer
}

type closeBuffer struct{ bytes.Buffer }

func (*closeBuffer) Close() error { return nil }

func (b bufIO) Stdin() io.Reader            { return b.stdin }
func (b bufIO) Stdout() io.WriteCloser      { return b.stdout }
func (b bufIO) Stderr() io.WriteCloser      { return b.stderr }
func (b bufIO) TTY() bool                   { return false }
func (b bufIO) Resize() <-chan api.TermSize { return nil }

func readLogs(t *testing.T, tk *testKubelet, pod *corev1.Pod, container string, opts api.ContainerLogOpts) string {
	t.Helper()
	rc, err := (provider{tk.Kubelet}).GetContainerLogs(context.Background(), pod.Namespace, pod.Name, container, opts)
	if err != nil {
		t.Fatalf("logs of %s: %v", container, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPodRunsReadyExecLogsAndGracefulDelete(t *testing.T) {
	tk := newTestKubelet(t)
	p := provider{tk.Kubelet}
	pod := newTestPod("web")
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "setup", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo init-ran; echo done > /init-marker"},
	}}
	pod.Spec.Containers = []corev1.Container{{
		Name:  "main",
		Image: "busybox",
		Command: []string{"/bin/sh", "-c",
			`echo "hello $POD_IP $(cat /init-marker)"; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done`},
		Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/init-marker"}}},
			PeriodSeconds: 1, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 3,
		},
		TerminationMessagePath: "/dev/termination-log",
	}}
	tk.run(t, pod)

	st := tk.waitFor(t, pod, "Ready", 20*time.Second, podReady)
	if st.Status.Phase != corev1.PodRunning || st.Status.PodIP != "192.0.2.10" || st.Status.HostIP != "192.0.2.1" {
		t.Errorf("running pod: phase %s podIP %q hostIP %q", st.Status.Phase, st.Status.PodIP, st.Status.HostIP)
	}
	init := st.Status.InitContainerStatuses[0]
	if init.State.Terminated == nil || init.State.Terminated.ExitCode != 0 || init.State.Terminated.Reason != "Completed" {
		t.Errorf("init container status = %+v", init.State)
	}
	main := st.Status.ContainerStatuses[0]
	if main.State.Running == nil || !main.Ready || !strings.HasPrefix(main.ContainerID, "knet://") || main.RestartCount != 0 {
		t.Errorf("main container status = %+v", main)
	}
	if tk.net.attachments() != 1 {
		t.Errorf("network attachments = %d, want 1", tk.net.attachments())
	}

	// Exec sees the pod's files; a failing command reports its exit code.
	out := bufIO{stdout: &closeBuffer{}, stderr: &closeBuffer{}}
	if err := p.RunInContainer(context.Background(), "default", "web", "main", []string{"cat", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}, out); err != nil {
		t.Fatalf("exec: %v (stderr %q)", err, out.stderr.String())
	}
	for _, want := range []string{"192.0.2.10\tweb", "nameserver 10.96.0.10", "search default.svc.cluster.local"} {
		if !strings.Contains(out.stdout.String(), want) {
			t.Errorf("pod files lack %q:\n%s", want, out.stdout.String())
		}
	}
	err := p.RunInContainer(context.Background(), "default", "web", "main", []string{"sh", "-c", "exit 3"}, bufIO{stdout: &closeBuffer{}, stderr: &closeBuffer{}})
	var exitErr utilexec.CodeExitError
	if !errors.As(err, &exitErr) || exitErr.Code != 3 {
		t.Errorf("exec exit 3: err = %v, want CodeExitError 3", err)
	}

	// Logs: the env var was resolved after the pod got its IP.
	if logs := readLogs(t, tk, pod, "main", api.ContainerLogOpts{}); !strings.Contains(logs, "hello 192.0.2.10 done") {
		t.Errorf("main logs = %q", logs)
	}
	if logs := readLogs(t, tk, pod, "setup", api.ContainerLogOpts{}); logs != "init-ran\n" {
		t.Errorf("init logs = %q", logs)
	}

	// Graceful delete: SIGTERM runs the trap, the container exits 0.
	w := tk.worker("default", "web")
	deleting := pod.DeepCopy()
	now := metav1.Now()
	deleting.DeletionTimestamp, deleting.DeletionGracePeriodSeconds = &now, ptrTo(int64(5))
	if err := p.DeletePod(context.Background(), deleting); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatal("pod did not stop after delete")
	}
	final, _ := w.computeStatus()
	term := final.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 0 {
		t.Errorf("after graceful delete: main state %+v, want terminated with exit 0 (trap ran)", final.Status.ContainerStatuses[0].State)
	}
	if final.Status.Phase != corev1.PodSucceeded {
		t.Errorf("phase after delete = %s, want Succeeded (every container exited 0)", final.Status.Phase)
	}
	if tk.net.attachments() != 0 {
		t.Error("pod network not torn down after delete")
	}
	select {
	case <-w.removed:
	case <-time.After(5 * time.Second):
		t.Fatal("deleted pod was not forgotten")
	}
	if _, err := os.Stat(w.dir); !os.IsNotExist(err) {
		t.Errorf("pod directory %s left after delete: %v", w.dir, err)
	}
}

func TestRestartPolicyAndTerminationMessage(t *testing.T) {
	tk := newTestKubelet(t)
	pod := newTestPod("job")
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	// Fails once (the pod root keeps the marker across restarts), then succeeds.
	pod.Spec.Containers = []corev1.Container{{
		Name: "work", Image: "busybox",
		Command: []string{"/bin/sh", "-c",
			`if [ -e /marker ]; then echo second; echo all good > /dev/termination-log; exit 0; fi; touch /marker; echo first; exit 1`},
		TerminationMessagePath: "/dev/termination-log",
	}}
	tk.run(t, pod)
	st := tk.waitFor(t, pod, "Succeeded", 20*time.Second, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	cs := st.Status.ContainerStatuses[0]
	if cs.RestartCount != 1 {
		t.Errorf("restartCount = %d, want 1", cs.RestartCount)
	}
	if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 1 {
		t.Errorf("lastState = %+v, want terminated with exit 1", cs.LastTerminationState)
	}
	if cs.State.Terminated == nil || cs.State.Terminated.Message != "all good\n" || cs.State.Terminated.Reason != "Completed" {
		t.Errorf("state = %+v, want Completed with the termination message", cs.State.Terminated)
	}
	if prev := readLogs(t, tk, pod, "work", api.ContainerLogOpts{Previous: true}); prev != "first\n" {
		t.Errorf("previous logs = %q", prev)
	}
	if cur := readLogs(t, tk, pod, "work", api.ContainerLogOpts{}); cur != "second\n" {
		t.Errorf("current logs = %q", cur)
	}
	if tk.net.attachments() != 0 {
		t.Error("finished pod keeps its network attachment")
	}
}

func TestLivenessFailureRestartsAndUnmappedImageWaits(t *testing.T) {
	tk := newTestKubelet(t)
	pod := newTestPod("probed")
	pod.Spec.Containers = []corev1.Container{
		{
			Name: "sick", Image: "busybox", Command: []string{"/bin/sh", "-c", "while true; do sleep 0.1; done"},
			LivenessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"false"}}},
				PeriodSeconds: 1, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 2,
			},
		},
		{Name: "unmapped", Image: "example.com/unknown:1"},
	}
	pod.Spec.TerminationGracePeriodSeconds = ptrTo(int64(1))
	tk.run(t, pod)
	st := tk.waitFor(t, pod, "a liveness restart", 30*time.Second, func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 2 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	un := st.Status.ContainerStatuses[1]
	if un.State.Waiting == nil || un.State.Waiting.Reason != "CreateContainerConfigError" || !strings.Contains(un.State.Waiting.Message, "--image-map") {
		t.Errorf("unmapped container state = %+v", un.State)
	}
	if st.Status.Phase != corev1.PodPending {
		t.Errorf("phase = %s, want Pending while a container cannot start", st.Status.Phase)
	}
	var sawKilling, sawUnhealthy bool
	for len(tk.events) > 0 {
		e := <-tk.events
		sawKilling = sawKilling || strings.Contains(e, "Killing") && strings.Contains(e, "liveness")
		sawUnhealthy = sawUnhealthy || strings.Contains(e, "Unhealthy")
	}
	if !sawKilling || !sawUnhealthy {
		t.Errorf("events: Killing for liveness %v, Unhealthy %v", sawKilling, sawUnhealthy)
	}
}

func TestActiveDeadlineFailsPod(t *testing.T) {
	tk := newTestKubelet(t)
	pod := newTestPod("deadline")
	pod.Spec.ActiveDeadlineSeconds = ptrTo(int64(1))
	pod.Spec.TerminationGracePeriodSeconds = ptrTo(int64(1))
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"}}}
	tk.run(t, pod)
	st := tk.waitFor(t, pod, "Failed", 20*time.Second, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if st.Status.Reason != "DeadlineExceeded" {
		t.Errorf("reason = %q, want DeadlineExceeded", st.Status.Reason)
	}
	// A failed pod stays known (kubectl logs works) until it is deleted.
	if tk.worker(pod.Namespace, pod.Name) == nil {
		t.Error("failed pod forgotten before deletion")
	}
}

func TestSidecarStartupProbeAndHooks(t *testing.T) {
	tk := newTestKubelet(t)
	always := corev1.ContainerRestartPolicyAlways
	pod := newTestPod("hooks")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "sidecar", Image: "busybox", RestartPolicy: &always,
		Command: []string{"/bin/sh", "-c", "sleep 0.5; touch /sidecar-up; while true; do sleep 0.1; done"},
		StartupProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", "/sidecar-up"}}},
			PeriodSeconds: 1, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 30,
		},
	}}
	pod.Spec.Containers = []corev1.Container{{
		Name: "main", Image: "busybox",
		// The main container may only start once the sidecar passed its
		// startup probe; postStart runs before it counts as started.
		// On SIGTERM it reports what preStop left, through its termination message.
		Command: []string{"/bin/sh", "-c",
			"test -e /sidecar-up || exit 9; trap 'cat /prestop-saw > /dev/termination-log; exit 0' TERM; while true; do sleep 0.1; done"},
		TerminationMessagePath: "/dev/termination-log",
		Lifecycle: &corev1.Lifecycle{
			PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "echo post > /poststart"}}},
			PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "cp /poststart /prestop-saw"}}},
		},
	}}
	tk.run(t, pod)
	st := tk.waitFor(t, pod, "Ready", 20*time.Second, podReady)
	side := st.Status.InitContainerStatuses[0]
	if side.State.Running == nil || side.Started == nil || !*side.Started || !side.Ready {
		t.Errorf("sidecar status = %+v", side)
	}
	out := bufIO{stdout: &closeBuffer{}, stderr: &closeBuffer{}}
	if err := (provider{tk.Kubelet}).RunInContainer(context.Background(), "default", "hooks", "main", []string{"cat", "/poststart"}, out); err != nil || out.stdout.String() != "post\n" {
		t.Errorf("postStart hook effect: %q, %v", out.stdout.String(), err)
	}

	w := tk.worker("default", "hooks")
	if err := (provider{tk.Kubelet}).DeletePod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	<-w.done
	final, _ := w.computeStatus()
	if term := final.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 || term.Message != "post\n" {
		t.Errorf("main after delete = %+v; want exit 0 with message \"post\" (preStop ran before SIGTERM)", final.Status.ContainerStatuses[0].State)
	}
	if s := final.Status.InitContainerStatuses[0].State.Terminated; s == nil {
		t.Errorf("sidecar not terminated after the pod stopped: %+v", final.Status.InitContainerStatuses[0].State)
	}
}

func TestPodWaitsForNetworkPlugin(t *testing.T) {
	tk := newTestKubelet(t)
	tk.net.notReady.Store(true)
	pod := newTestPod("early")
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "while true; do sleep 0.1; done"}}}
	tk.run(t, pod)
	time.Sleep(time.Second)
	st, _ := tk.worker("default", "early").computeStatus()
	if st.Status.Phase != corev1.PodPending || st.Status.PodIP != "" || st.Status.ContainerStatuses[0].State.Waiting == nil {
		t.Errorf("before the network is ready: phase %s podIP %q state %+v", st.Status.Phase, st.Status.PodIP, st.Status.ContainerStatuses[0].State)
	}
	if s, _ := condStatus(st.Status, corev1.PodReadyToStartContainers); s != corev1.ConditionFalse {
		t.Errorf("PodReadyToStartContainers = %s before the network is ready", s)
	}
	tk.net.notReady.Store(false)
	tk.waitFor(t, pod, "Ready once the network plugin is ready", 10*time.Second, podReady)
}

func TestAttachSendsStdinAndStreamsOutput(t *testing.T) {
	tk := newTestKubelet(t)
	pod := newTestPod("attach")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Stdin: true, StdinOnce: true,
		Command: []string{"/bin/sh", "-c", "read line; echo got-$line"}}}
	tk.run(t, pod)
	tk.waitFor(t, pod, "Running", 20*time.Second, func(p *corev1.Pod) bool {
		return p.Status.ContainerStatuses[0].State.Running != nil
	})
	out := bufIO{stdin: strings.NewReader("hello\n"), stdout: &closeBuffer{}, stderr: &closeBuffer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := (provider{tk.Kubelet}).AttachToContainer(ctx, "default", "attach", "c", out); err != nil {
		t.Fatal(err)
	}
	if got := out.stdout.String(); got != "got-hello\n" {
		t.Errorf("attached output = %q, want %q", got, "got-hello\n")
	}
}

// lateKubernetesService is an empty cluster whose default/kubernetes Service appears at a
// given time.
type lateKubernetesService struct {
	noEnvSources
	at time.Time
}

func (l lateKubernetesService) KubernetesServiceKnown() bool { return time.Now().After(l.at) }

// TestContainerWaitsForTheKubernetesService: a container does not start before the kubelet
// knows default/kubernetes (it would miss KUBERNETES_SERVICE_HOST), and starts right after.
func TestContainerWaitsForTheKubernetesService(t *testing.T) {
	tk := newTestKubelet(t)
	appears := time.Now().Add(700 * time.Millisecond)
	tk.envSources = lateKubernetesService{at: appears}
	pod := newTestPod("early")
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "sleep 30"}}}
	tk.run(t, pod)
	st := tk.waitFor(t, pod, "Running", 20*time.Second, func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	started := st.Status.ContainerStatuses[0].State.Running.StartedAt.Time
	// StartedAt has second precision; the check is on the wall clock of the observation too.
	if time.Now().Before(appears) {
		t.Fatalf("container running before the kubernetes Service appeared")
	}
	if started.After(appears.Add(5 * time.Second)) {
		t.Errorf("container started at %s, long after the Service appeared at %s", started, appears)
	}
}
