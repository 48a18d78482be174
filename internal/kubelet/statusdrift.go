package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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

// restoreStatus writes the kubelet's status of the pod (pod.Status) to the API when the API's
// copy drifted from it, and reports whether it tried. It writes directly: virtual-kubelet skips a
// notification equal to its previous one, and ours did not change. A conflict (the informer
// copy was stale) is retried at the next tick.
func (k *Kubelet) restoreStatus(w *podWorker, pod *corev1.Pod) bool {
	l := k.podLister
	if l == nil || k.cfg.Client == nil {
		return false
	}
	api, err := l.Pods(w.namespace).Get(w.name)
	if err != nil || api.UID != w.uid || !statusDrifted(&api.Status, &pod.Status) {
		return false
	}
	upd := api.DeepCopy()
	upd.Status = pod.Status
	ctx, cancel := context.WithTimeout(k.runCtx, 10*time.Second)
	defer cancel()
	if _, err := k.cfg.Client.CoreV1().Pods(w.namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		w.log.Warn("restore the pod status another writer changed", "err", err)
		return true
	}
	w.log.Info("restored the pod status another writer changed", "apiPhase", api.Status.Phase, "apiReady", conditionStatus(&api.Status, corev1.PodReady))
	return true
}
