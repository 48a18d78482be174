package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestStatusDrifted(t *testing.T) {
	ready := func(phase corev1.PodPhase, r corev1.ConditionStatus) *corev1.PodStatus {
		return &corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			{Type: corev1.PodReady, Status: r},
		}}
	}
	mine := ready(corev1.PodRunning, corev1.ConditionTrue)
	// What the node lifecycle controller writes while the node is NotReady.
	markedNotReady := ready(corev1.PodRunning, corev1.ConditionFalse)
	markedNotReady.Conditions[2].Reason = "NodeNotReady"
	cases := []struct {
		name string
		api  *corev1.PodStatus
		want bool
	}{
		{"same", ready(corev1.PodRunning, corev1.ConditionTrue), false},
		{"node controller marked it not ready", markedNotReady, true},
		{"phase differs", ready(corev1.PodPending, corev1.ConditionTrue), true},
		{"no status in the API yet", nil, false},
	}
	for _, c := range cases {
		if got := statusDrifted(c.api, mine); got != c.want {
			t.Errorf("%s: statusDrifted = %v, want %v", c.name, got, c.want)
		}
	}
}
