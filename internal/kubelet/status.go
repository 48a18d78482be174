package kubelet

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerRecord is what the kubelet knows about one container; the pod
// status is computed from these alone.
type containerRecord struct {
	Name         string
	Image        string
	ImageID      string
	ContainerID  string
	State        corev1.ContainerState
	LastState    corev1.ContainerState
	RestartCount int32
	Ready        bool
	Started      bool
	// StartedOnce: some attempt started (sidecars stay "initialized").
	StartedOnce bool
}

func (r containerRecord) status() corev1.ContainerStatus {
	started := r.Started
	return corev1.ContainerStatus{
		Name:                 r.Name,
		State:                r.State,
		LastTerminationState: r.LastState,
		Ready:                r.Ready,
		RestartCount:         r.RestartCount,
		Image:                r.Image,
		ImageID:              r.ImageID,
		ContainerID:          r.ContainerID,
		Started:              &started,
	}
}

// podRecord is the input of podStatus.
type podRecord struct {
	// Pod is the pod as the API server has it now: spec, and the status
	// conditions other writers own (PodScheduled, readiness gates).
	Pod          *corev1.Pod
	HostIPs      []string
	PodIPs       []string
	StartTime    time.Time
	SandboxReady bool
	// Init and Containers follow the order of the spec.
	Init       []containerRecord
	Containers []containerRecord
	// Terminal says no container will be started again (the pod finished,
	// or it is being deleted and everything stopped).
	Terminal bool
	Reason   string
	Message  string
	// Prev is the status this kubelet reported last; unchanged conditions
	// keep its transition times so a recomputation changes nothing.
	Prev *corev1.PodStatus
}

func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// initDone reports whether an init container no longer blocks the pod:
// a sidecar once it started, any other once it exited 0.
func initDone(spec *corev1.Container, r containerRecord) bool {
	if isSidecar(spec) {
		// Once a sidecar started, a later crash does not un-initialize the pod.
		return r.StartedOnce
	}
	return r.State.Terminated != nil && r.State.Terminated.ExitCode == 0
}

// podPhase follows the kubelet's getPhase.
func podPhase(r podRecord) corev1.PodPhase {
	spec := &r.Pod.Spec
	if r.Terminal && r.Reason == reasonDeadlineExceeded {
		return corev1.PodFailed
	}
	initialized := true
	for i := range spec.InitContainers {
		ir := r.Init[i]
		if initDone(&spec.InitContainers[i], ir) {
			continue
		}
		initialized = false
		if !isSidecar(&spec.InitContainers[i]) && ir.State.Terminated != nil && ir.State.Terminated.ExitCode != 0 &&
			(r.Terminal || spec.RestartPolicy == corev1.RestartPolicyNever) {
			return corev1.PodFailed
		}
	}
	if !initialized {
		if r.Terminal {
			return corev1.PodFailed
		}
		return corev1.PodPending
	}
	var running, waiting, stopped, succeeded int
	for _, c := range r.Containers {
		switch {
		case c.State.Running != nil:
			running++
		case c.State.Terminated != nil:
			stopped++
			if c.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.State.Waiting != nil && c.LastState.Terminated != nil:
			stopped++
			if c.LastState.Terminated.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		if r.Terminal {
			if stopped == succeeded {
				return corev1.PodSucceeded
			}
			return corev1.PodFailed
		}
		switch {
		case spec.RestartPolicy == corev1.RestartPolicyAlways:
			return corev1.PodRunning
		case stopped == succeeded:
			return corev1.PodSucceeded
		case spec.RestartPolicy == corev1.RestartPolicyNever:
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// ownedConditions are the pod conditions the kubelet writes; every other
// condition (PodScheduled, readiness gates, DisruptionTarget) is kept as
// the API server has it.
var ownedConditions = []corev1.PodConditionType{
	corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady,
}

// podStatus computes the pod status the kubelet reports. now stamps
// conditions that change; conditions that did not change keep their
// LastTransitionTime from the API server's copy.
func podStatus(r podRecord, now time.Time) corev1.PodStatus {
	spec := &r.Pod.Spec
	phase := podPhase(r)
	st := corev1.PodStatus{
		Phase:    phase,
		Reason:   r.Reason,
		Message:  r.Message,
		QOSClass: r.Pod.Status.QOSClass,
	}
	if len(r.HostIPs) > 0 {
		st.HostIP = r.HostIPs[0]
		for _, ip := range r.HostIPs {
			st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
		}
	}
	if len(r.PodIPs) > 0 {
		st.PodIP = r.PodIPs[0]
		for _, ip := range r.PodIPs {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	if !r.StartTime.IsZero() {
		t := metav1.NewTime(r.StartTime)
		st.StartTime = &t
	}
	for _, c := range r.Init {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
	}
	for _, c := range r.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, c.status())
	}

	terminalPhase := phase == corev1.PodSucceeded || phase == corev1.PodFailed
	var conds []corev1.PodCondition
	add := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		conds = append(conds, condition(r, t, ok, reason, msg, now))
	}
	add(corev1.PodReadyToStartContainers, r.SandboxReady && !terminalPhase, "", "")

	var notInit []string
	for i := range spec.InitContainers {
		if !initDone(&spec.InitContainers[i], r.Init[i]) {
			notInit = append(notInit, spec.InitContainers[i].Name)
		}
	}
	switch {
	case len(notInit) == 0 || terminalPhase && phase == corev1.PodSucceeded:
		add(corev1.PodInitialized, true, "", "")
	default:
		add(corev1.PodInitialized, false, "ContainersNotInitialized",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " ")))
	}

	var unready []string
	for i := range spec.InitContainers {
		if isSidecar(&spec.InitContainers[i]) && !r.Init[i].Ready {
			unready = append(unready, spec.InitContainers[i].Name)
		}
	}
	for _, c := range r.Containers {
		if !c.Ready {
			unready = append(unready, c.Name)
		}
	}
	containersReady := len(unready) == 0 && len(notInit) == 0 && !terminalPhase
	switch {
	case terminalPhase:
		add(corev1.ContainersReady, false, "PodCompleted", "")
	case len(notInit) > 0:
		add(corev1.ContainersReady, false, "ContainersNotReady",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " ")))
	case !containersReady:
		add(corev1.ContainersReady, false, "ContainersNotReady",
			fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " ")))
	default:
		add(corev1.ContainersReady, true, "", "")
	}

	switch {
	case terminalPhase:
		add(corev1.PodReady, false, "PodCompleted", "")
	case len(notInit) > 0:
		add(corev1.PodReady, false, "ContainersNotReady",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " ")))
	case !containersReady:
		add(corev1.PodReady, false, "ContainersNotReady",
			fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " ")))
	default:
		if msg := unmetReadinessGates(r.Pod); msg != "" {
			add(corev1.PodReady, false, "ReadinessGatesNotReady", msg)
		} else {
			add(corev1.PodReady, true, "", "")
		}
	}

	for _, c := range r.Pod.Status.Conditions {
		if !slices.Contains(ownedConditions, c.Type) {
			conds = append(conds, c)
		}
	}
	sort.SliceStable(conds, func(i, j int) bool { return condOrder(conds[i].Type) < condOrder(conds[j].Type) })
	st.Conditions = conds
	return st
}

func condOrder(t corev1.PodConditionType) int {
	switch t {
	case corev1.PodReadyToStartContainers:
		return 0
	case corev1.PodInitialized:
		return 1
	case corev1.PodReady:
		return 2
	case corev1.ContainersReady:
		return 3
	case corev1.PodScheduled:
		return 4
	}
	return 5
}

// unmetReadinessGates returns why the pod's readiness gates block Ready, or
// "" when all are True.
func unmetReadinessGates(pod *corev1.Pod) string {
	var msgs []string
	for _, g := range pod.Spec.ReadinessGates {
		found := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType {
				found = true
				if c.Status != corev1.ConditionTrue {
					msgs = append(msgs, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %s", g.ConditionType, c.Status))
				}
			}
		}
		if !found {
			msgs = append(msgs, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		}
	}
	return strings.Join(msgs, ", ")
}

// condition builds a pod condition, keeping the previous transition time
// when the status did not change.
func condition(r podRecord, t corev1.PodConditionType, ok bool, reason, msg string, now time.Time) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	c := corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(now)}
	var olds []corev1.PodCondition
	if r.Prev != nil {
		olds = r.Prev.Conditions
	}
	olds = append(olds, r.Pod.Status.Conditions...)
	for _, old := range olds {
		if old.Type == t {
			if old.Status == status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			break
		}
	}
	return c
}
