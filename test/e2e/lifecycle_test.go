package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
)

func shellPod(name, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name: "sh", Image: "debian:bookworm", Command: []string{"/bin/sh", "-c", script},
			}},
		},
	}
}

func TestCrashingContainerBacksOff(t *testing.T) {
	ns := testNamespace(t)
	createPod(t, ns, shellPod("crash", "echo about to fail; exit 3"))
	p := waitPod(t, ns, "crash", 60*time.Second, "restarted in CrashLoopBackOff", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "CrashLoopBackOff"
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 3 {
		t.Errorf("last termination = %+v, want exit code 3", last)
	}
	out, err := kubectl(t, "logs", "-n", ns, "crash", "--previous")
	if err != nil || !strings.Contains(out, "about to fail") {
		t.Errorf("kubectl logs --previous = %q, %v", out, err)
	}
	// A crashing pod does not disturb its neighbours.
	createPod(t, ns, netexecPod("neighbour", nil))
	waitPodReady(t, ns, "neighbour")
}

func TestRestartPolicyNeverAndOnFailure(t *testing.T) {
	ns := testNamespace(t)
	ok := shellPod("ok", "echo done")
	ok.Spec.RestartPolicy = corev1.RestartPolicyNever
	createPod(t, ns, ok)
	waitPod(t, ns, "ok", 30*time.Second, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })

	fail := shellPod("fail", "exit 1")
	fail.Spec.RestartPolicy = corev1.RestartPolicyNever
	createPod(t, ns, fail)
	p := waitPod(t, ns, "fail", 30*time.Second, "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	if rc := p.Status.ContainerStatuses[0].RestartCount; rc != 0 {
		t.Errorf("restartPolicy Never restarted %d times", rc)
	}

	once := shellPod("onfailure", "if [ -e /tmp/again ]; then exit 0; fi; touch /tmp/again; exit 1")
	once.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	createPod(t, ns, once)
	p = waitPod(t, ns, "onfailure", 60*time.Second, "Succeeded after a restart", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if rc := p.Status.ContainerStatuses[0].RestartCount; rc != 1 {
		t.Errorf("OnFailure restartCount = %d, want 1", rc)
	}
}

func TestUnknownImageReportsHowToMapIt(t *testing.T) {
	ns := testNamespace(t)
	createPod(t, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unmapped"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/no/such:image"}}},
	})
	p := waitPod(t, ns, "unmapped", 30*time.Second, "waiting with a reason", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].State.Waiting != nil && strings.Contains(cs[0].State.Waiting.Message, "image-map")
	})
	t.Logf("reason: %s: %s", p.Status.ContainerStatuses[0].State.Waiting.Reason, p.Status.ContainerStatuses[0].State.Waiting.Message)
	eventually(t, 10*time.Second, func() error {
		ev, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "unmapped").String()})
		if err != nil {
			return err
		}
		for _, e := range ev.Items {
			if e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "image-map") {
				return nil
			}
		}
		return errorf("no warning event mentioning --image-map among %d events", len(ev.Items))
	})
}

func TestProbes(t *testing.T) {
	ns := testNamespace(t)
	// Readiness: a pod whose readiness probe fails stays running but not Ready.
	notReady := netexecPod("notready", nil)
	notReady.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstrFromInt(8099) // nothing listens there
	createPod(t, ns, notReady)
	waitPod(t, ns, "notready", 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	time.Sleep(3 * time.Second)
	p, _ := client.CoreV1().Pods(ns).Get(context.Background(), "notready", metav1.GetOptions{})
	if podReady(p) {
		t.Error("pod with failing readiness probe is Ready")
	}
	// Liveness (exec): the container is restarted when its probe fails.
	live := shellPod("liveness", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600")
	live.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	createPod(t, ns, live)
	waitPod(t, ns, "liveness", 60*time.Second, "restarted by its liveness probe", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1
	})
	// tcpSocket readiness and a startup probe gate readiness.
	tcp := netexecPod("tcp", nil)
	tcp.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstrFromInt(8080)}}, PeriodSeconds: 1}
	tcp.Spec.Containers[0].StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstrFromInt(8080)}}, PeriodSeconds: 1}
	createPod(t, ns, tcp)
	waitPodReady(t, ns, "tcp")
}

func TestGracefulTerminationRunsPreStopThenSIGTERM(t *testing.T) {
	ns := testNamespace(t)
	// The container logs SIGTERM; preStop writes a marker the container reports on TERM.
	p := shellPod("graceful", `trap 'echo got-TERM; cat /tmp/prestop; exit 0' TERM; echo started; while true; do sleep 0.1; done`)
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](10)
	p.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo prestop-ran > /tmp/prestop"}}}}
	createPod(t, ns, p)
	waitPod(t, ns, "graceful", 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	logs := make(chan string, 1)
	go func() {
		out, _ := kubectl(t, "logs", "-n", ns, "graceful", "-f")
		logs <- out
	}()
	time.Sleep(time.Second)
	start := time.Now()
	if err := client.CoreV1().Pods(ns).Delete(context.Background(), "graceful", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var out string
	select {
	case out = <-logs:
	case <-time.After(20 * time.Second):
		t.Fatal("log stream did not end after the container exited")
	}
	if !strings.Contains(out, "got-TERM") || !strings.Contains(out, "prestop-ran") {
		t.Errorf("container did not see preStop then SIGTERM; logs: %q", out)
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("termination took %s although the container exited on SIGTERM", d)
	}
}
