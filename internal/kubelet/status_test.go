package kubelet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func running() corev1.ContainerState {
	return corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
}
func waiting(reason string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
}
func exited(code int32) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
}

func testPod(policy corev1.RestartPolicy, init []corev1.Container, names ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	p.Spec.RestartPolicy = policy
	p.Spec.InitContainers = init
	for _, n := range names {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n})
	}
	return p
}

func condStatus(st corev1.PodStatus, t corev1.PodConditionType) (corev1.ConditionStatus, string) {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

func TestPodStatusPhase(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	sidecar := corev1.Container{Name: "side", RestartPolicy: &always}
	plainInit := corev1.Container{Name: "init"}
	tests := []struct {
		name       string
		pod        *corev1.Pod
		init, main []containerRecord
		terminal   bool
		phase      corev1.PodPhase
		ready      corev1.ConditionStatus
		initCond   corev1.ConditionStatus
	}{
		{"creating", testPod("Always", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: waiting("ContainerCreating")}}, false, corev1.PodPending, "False", "True"},
		{"running ready", testPod("Always", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: running(), Ready: true, Started: true}}, false, corev1.PodRunning, "True", "True"},
		{"running one unready", testPod("Always", nil, "a", "b"), nil,
			[]containerRecord{{Name: "a", State: running(), Ready: true}, {Name: "b", State: running()}}, false, corev1.PodRunning, "False", "True"},
		{"crashloop counts as stopped", testPod("Always", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: waiting("CrashLoopBackOff"), LastState: exited(1), RestartCount: 2}}, false, corev1.PodRunning, "False", "True"},
		{"never: failed", testPod("Never", nil, "a", "b"), nil,
			[]containerRecord{{Name: "a", State: exited(0)}, {Name: "b", State: exited(3)}}, true, corev1.PodFailed, "False", "True"},
		{"never: succeeded", testPod("Never", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: exited(0)}}, true, corev1.PodSucceeded, "False", "True"},
		{"onfailure: succeeded", testPod("OnFailure", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: exited(0)}}, false, corev1.PodSucceeded, "False", "True"},
		{"onfailure: restarting", testPod("OnFailure", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: exited(1)}}, false, corev1.PodRunning, "False", "True"},
		{"deleted running pod", testPod("Always", nil, "a"), nil,
			[]containerRecord{{Name: "a", State: exited(143)}}, true, corev1.PodFailed, "False", "True"},
		{"init running", testPod("Always", []corev1.Container{plainInit}, "a"),
			[]containerRecord{{Name: "init", State: running()}},
			[]containerRecord{{Name: "a", State: waiting("PodInitializing")}}, false, corev1.PodPending, "False", "False"},
		{"init failed, never", testPod("Never", []corev1.Container{plainInit}, "a"),
			[]containerRecord{{Name: "init", State: exited(1)}},
			[]containerRecord{{Name: "a", State: waiting("PodInitializing")}}, false, corev1.PodFailed, "False", "False"},
		{"init failed, retried", testPod("Always", []corev1.Container{plainInit}, "a"),
			[]containerRecord{{Name: "init", State: exited(1)}},
			[]containerRecord{{Name: "a", State: waiting("PodInitializing")}}, false, corev1.PodPending, "False", "False"},
		{"sidecar started, main running", testPod("Never", []corev1.Container{sidecar}, "a"),
			[]containerRecord{{Name: "side", State: running(), Started: true, StartedOnce: true, Ready: true}},
			[]containerRecord{{Name: "a", State: running(), Ready: true}}, false, corev1.PodRunning, "True", "True"},
		{"sidecar unready blocks Ready", testPod("Never", []corev1.Container{sidecar}, "a"),
			[]containerRecord{{Name: "side", State: running(), Started: true, StartedOnce: true}},
			[]containerRecord{{Name: "a", State: running(), Ready: true}}, false, corev1.PodRunning, "False", "True"},
		{"main done, sidecar still running: succeeded", testPod("Never", []corev1.Container{sidecar}, "a"),
			[]containerRecord{{Name: "side", State: exited(137), StartedOnce: true}},
			[]containerRecord{{Name: "a", State: exited(0)}}, true, corev1.PodSucceeded, "False", "True"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := podStatus(podRecord{Pod: tc.pod, Init: tc.init, Containers: tc.main, Terminal: tc.terminal,
				SandboxReady: true, PodIPs: []string{"10.244.1.5"}, HostIPs: []string{"172.18.0.2"}}, time.Now())
			if st.Phase != tc.phase {
				t.Errorf("phase = %s, want %s", st.Phase, tc.phase)
			}
			if s, _ := condStatus(st, corev1.PodReady); s != tc.ready {
				t.Errorf("Ready = %s, want %s", s, tc.ready)
			}
			if s, _ := condStatus(st, corev1.PodInitialized); s != tc.initCond {
				t.Errorf("Initialized = %s, want %s", s, tc.initCond)
			}
			if st.PodIP != "10.244.1.5" || len(st.PodIPs) != 1 || st.HostIP != "172.18.0.2" || len(st.HostIPs) != 1 {
				t.Errorf("IPs = %q %v %q %v", st.PodIP, st.PodIPs, st.HostIP, st.HostIPs)
			}
			if len(st.ContainerStatuses) != len(tc.main) || len(st.InitContainerStatuses) != len(tc.init) {
				t.Errorf("statuses: %d containers, %d init", len(st.ContainerStatuses), len(st.InitContainerStatuses))
			}
		})
	}
}

func TestPodStatusConditions(t *testing.T) {
	pod := testPod("Always", nil, "a")
	pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}
	scheduledAt := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: "True", LastTransitionTime: scheduledAt}}
	rec := podRecord{Pod: pod, SandboxReady: true, Containers: []containerRecord{{Name: "a", State: running(), Ready: true}}}

	t1 := time.Now().Truncate(time.Second)
	st := podStatus(rec, t1)
	if s, reason := condStatus(st, corev1.PodReady); s != "False" || reason != "ReadinessGatesNotReady" {
		t.Errorf("Ready = %s/%s, want False/ReadinessGatesNotReady", s, reason)
	}
	if s, _ := condStatus(st, corev1.ContainersReady); s != "True" {
		t.Errorf("ContainersReady = %s, want True", s)
	}
	if s, _ := condStatus(st, corev1.PodScheduled); s != "True" {
		t.Error("PodScheduled (owned by the scheduler) was dropped")
	}
	if s, _ := condStatus(st, corev1.PodReadyToStartContainers); s != "True" {
		t.Errorf("PodReadyToStartContainers = %s", s)
	}

	// The gate's condition appears: Ready turns True.
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: "example.com/lb", Status: "True"})
	rec.Prev = &st
	t2 := t1.Add(time.Minute)
	st2 := podStatus(rec, t2)
	if s, _ := condStatus(st2, corev1.PodReady); s != "True" {
		t.Errorf("Ready with gate True = %s", s)
	}
	// Unchanged conditions keep their transition time; changed ones move.
	for _, c := range st2.Conditions {
		switch c.Type {
		case corev1.PodReady:
			if !c.LastTransitionTime.Time.Equal(t2) {
				t.Errorf("Ready transition = %v, want %v", c.LastTransitionTime, t2)
			}
		case corev1.ContainersReady:
			if !c.LastTransitionTime.Time.Equal(t1) {
				t.Errorf("ContainersReady transition = %v, want %v (unchanged)", c.LastTransitionTime, t1)
			}
		case corev1.PodScheduled:
			if !c.LastTransitionTime.Equal(&scheduledAt) {
				t.Errorf("PodScheduled transition changed")
			}
		}
	}
	// Recomputing without change yields the same status.
	rec.Prev = &st2
	if st3 := podStatus(rec, t2.Add(time.Minute)); !equalStatus(st2, st3) {
		t.Errorf("a second computation without change changed the status:\n%+v\n%+v", st2, st3)
	}
}

func equalStatus(a, b corev1.PodStatus) bool {
	if len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i] != b.Conditions[i] {
			return false
		}
	}
	return a.Phase == b.Phase
}
