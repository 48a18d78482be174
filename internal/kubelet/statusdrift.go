package kubelet

import corev1 "k8s.io/api/core/v1"

// statusDrifted reports whether the API server's copy of a pod's status disagrees with the
// kubelet's own on what other controllers act on: the phase and the Ready and ContainersReady
// conditions. The kubelet owns the pod status, but others write it too: the node lifecycle
// controller marks every pod of a node that missed its heartbeats Ready=False, and only the
// kubelet puts it back (the upstream kubelet's status manager does so at its next sync). Without
// that, a node that was briefly NotReady under load keeps its pods out of every Service.
func statusDrifted(api, mine *corev1.PodStatus) bool {
	if api == nil || mine == nil {
		return false
	}
	if api.Phase != mine.Phase {
		return true
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
		if conditionStatus(api, t) != conditionStatus(mine, t) {
			return true
		}
	}
	return false
}

func conditionStatus(s *corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range s.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// apiStatus is the pod's status as the API server (the informer cache) has it, or nil.
func (w *podWorker) apiStatus() *corev1.PodStatus {
	if l := w.k.podLister; l != nil {
		if p, err := l.Pods(w.namespace).Get(w.name); err == nil && p.UID == w.uid {
			return &p.Status
		}
	}
	return nil
}
