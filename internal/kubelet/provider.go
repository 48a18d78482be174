package kubelet

import (
	"context"
	"fmt"
	"io"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"
)

// provider implements virtual-kubelet's nodeutil.Provider and
// node.PodNotifier on top of the Kubelet's pod workers.
type provider struct{ k *Kubelet }

// CreatePod starts the pod's worker and returns at once; progress is
// reported through NotifyPods.
func (p provider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	p.k.startPod(pod)
	return nil
}

// UpdatePod applies metadata changes; a pod with a new UID under a known
// name (a recreated StatefulSet pod) replaces the old one.
func (p provider) UpdatePod(_ context.Context, pod *corev1.Pod) error {
	w := p.k.worker(pod.Namespace, pod.Name)
	if w == nil || w.uid != pod.UID {
		p.k.startPod(pod)
		return nil
	}
	w.update(pod)
	return nil
}

// DeletePod starts graceful termination and returns; the terminal status
// follows through NotifyPods.
func (p provider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	w := p.k.worker(pod.Namespace, pod.Name)
	if w == nil || (pod.UID != "" && w.uid != pod.UID) {
		return errdefs.NotFoundf("pod %s/%s is not running on this node", pod.Namespace, pod.Name)
	}
	grace := w.podGrace()
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.DeletionTimestamp != nil {
		w.mu.Lock()
		p := w.pod.DeepCopy()
		p.DeletionTimestamp = pod.DeletionTimestamp.DeepCopy()
		p.DeletionGracePeriodSeconds = pod.DeletionGracePeriodSeconds
		w.pod = p
		w.mu.Unlock()
	}
	w.terminate(grace)
	return nil
}

func (p provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	w := p.k.worker(namespace, name)
	if w == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not known to this node", namespace, name)
	}
	pod := w.snapshotPod()
	w.mu.Lock()
	if w.lastStatus != nil {
		pod.Status = *w.lastStatus.DeepCopy()
	}
	w.mu.Unlock()
	return pod, nil
}

func (p provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

func (p provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	p.k.mu.Lock()
	keys := make([][2]string, 0, len(p.k.pods))
	for _, w := range p.k.pods {
		keys = append(keys, [2]string{w.namespace, w.name})
	}
	p.k.mu.Unlock()
	var out []*corev1.Pod
	for _, k := range keys {
		if pod, err := p.GetPod(ctx, k[0], k[1]); err == nil {
			out = append(out, pod)
		}
	}
	return out, nil
}

// NotifyPods registers virtual-kubelet's status callback.
func (p provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.k.mu.Lock()
	p.k.notifyPod = cb
	p.k.mu.Unlock()
}

// container finds a container runner of a pod.
func (k *Kubelet) container(namespace, pod, name string) (*podWorker, *containerRunner, error) {
	w := k.worker(namespace, pod)
	if w == nil {
		return nil, nil, errdefs.NotFoundf("pod %s/%s not found on this node", namespace, pod)
	}
	for _, c := range append(append([]*containerRunner(nil), w.init...), w.containers...) {
		if c.spec.Name == name {
			return w, c, nil
		}
	}
	return nil, nil, errdefs.NotFoundf("container %q not found in pod %s/%s", name, namespace, pod)
}

// running returns the container's running process.
func (k *Kubelet) running(namespace, pod, name string) (*containerRunner, containerProcess, error) {
	w, c, err := k.container(namespace, pod, name)
	if err != nil {
		return nil, nil, err
	}
	w.mu.Lock()
	proc := c.proc
	w.mu.Unlock()
	if proc == nil {
		return nil, nil, errdefs.InvalidInputf("container %q in pod %s/%s is not running", name, namespace, pod)
	}
	return c, proc, nil
}

func (p provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	w, c, err := p.k.container(namespace, podName, containerName)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	attempt := c.attempt - 1
	proc := c.proc
	waiting := c.rec.State.Waiting
	w.mu.Unlock()
	var done <-chan struct{}
	switch {
	case opts.Previous:
		attempt--
		done = closedChan()
	case proc != nil:
		done = procDone(proc)
	default:
		done = closedChan()
	}
	if attempt < 0 {
		if opts.Previous {
			return nil, errdefs.InvalidInputf("previous terminated container %q in pod %q not found", containerName, podName)
		}
		reason := "ContainerCreating"
		if waiting != nil {
			reason = waiting.Reason
		}
		return nil, errdefs.InvalidInputf("container %q in pod %q is waiting to start: %s", containerName, podName, reason)
	}
	return logStream{path: c.logPath(attempt), opts: opts, done: done}.open(ctx)
}

func closedChan() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

func procDone(proc containerProcess) <-chan struct{} {
	ch := make(chan struct{})
	go func() { <-proc.Done(); close(ch) }()
	return ch
}

func (p provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	c, proc, err := p.k.running(namespace, podName, containerName)
	if err != nil {
		return err
	}
	c.w.mu.Lock()
	env := c.env
	c.w.mu.Unlock()
	spec := execSpec{Args: cmd, Env: env, TTY: attach.TTY(), Resize: convertResize(ctx, attach.Resize())}
	if in := attach.Stdin(); in != nil {
		spec.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		spec.Stdout = out
	}
	if e := attach.Stderr(); e != nil {
		spec.Stderr = e
	}
	code, err := proc.Exec(ctx, spec)
	if err != nil {
		return fmt.Errorf("exec in container %s of pod %s/%s: %w", containerName, namespace, podName, err)
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with non-zero exit code: %d", code), Code: code}
	}
	return nil
}

func convertResize(ctx context.Context, in <-chan api.TermSize) <-chan termSize {
	if in == nil {
		return nil
	}
	out := make(chan termSize)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- termSize{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// AttachToContainer connects to the container's stdin and streams its
// output from now on until it exits.
func (p provider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach api.AttachIO) error {
	c, proc, err := p.k.running(namespace, podName, containerName)
	if err != nil {
		return err
	}
	// Open the output stream before feeding stdin: what the container answers to our input must
	// not be written before we start following its log.
	out := attach.Stdout()
	if out == nil {
		out = attach.Stderr()
	}
	var rc io.ReadCloser
	if out != nil {
		c.w.mu.Lock()
		attempt := c.attempt - 1
		c.w.mu.Unlock()
		if rc, err = (logStream{path: c.logPath(attempt), opts: api.ContainerLogOpts{Follow: true}, fromEnd: true, done: procDone(proc)}).open(ctx); err != nil {
			return err
		}
		defer rc.Close()
	}
	if in := attach.Stdin(); in != nil && c.spec.Stdin {
		if w := proc.Stdin(); w != nil {
			go func() {
				_, _ = io.Copy(w, in)
				if c.spec.StdinOnce {
					w.Close()
				}
			}()
		}
	}
	if attach.TTY() {
		go func() {
			for s := range convertResize(ctx, attach.Resize()) {
				if err := proc.Resize(s); err != nil {
					c.w.log.Debug("resize attached terminal", "container", c.spec.Name, "err", err)
				}
			}
		}()
	}
	if rc == nil {
		select {
		case <-proc.Done():
		case <-ctx.Done():
		}
		return nil
	}
	_, err = io.Copy(out, rc)
	return err
}

// PortForward connects the stream to port on the pod's loopback.
func (p provider) PortForward(ctx context.Context, namespace, podName string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	w := p.k.worker(namespace, podName)
	if w == nil {
		return errdefs.NotFoundf("pod %s/%s not found on this node", namespace, podName)
	}
	w.mu.Lock()
	sb := w.sb
	ready := w.sandboxReady
	w.mu.Unlock()
	if sb == nil || !ready {
		return errdefs.InvalidInputf("pod %s/%s is not running", namespace, podName)
	}
	conn, err := sb.Dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s/%s port %d: %w", namespace, podName, port, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(conn, stream); errc <- err }()
	go func() { _, err := io.Copy(stream, conn); errc <- err }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	return err
}

// GetStatsSummary reports the node and its pods without resource usage:
// knet does not account container resources.
func (p provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	pods, _ := p.GetPods(ctx)
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.k.cfg.NodeName, StartTime: metav1.Now()}}
	for _, pod := range pods {
		s.Pods = append(s.Pods, statsv1alpha1.PodStats{
			PodRef: statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)},
		})
	}
	return s, nil
}

func (p provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) { return nil, nil }
