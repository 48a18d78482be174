package volume

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// containerEnv is the environment subPathExpr expands against: the
// kubelet's own (Config.ContainerEnv) when given, else the container's env
// entries resolved here. envFrom is not read in the fallback.
func (m *Manager) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (map[string]string, error) {
	if m.cfg.ContainerEnv != nil {
		return m.cfg.ContainerEnv(ctx, pod, c)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		var (
			val string
			err error
		)
		switch {
		case e.ValueFrom == nil:
			// $(VAR) refers to variables defined earlier, as in the kubelet.
			val = expansion.Expand(e.Value, expansion.MappingFuncFor(env))
		case e.ValueFrom.FieldRef != nil:
			val, err = podFieldValue(pod, e.ValueFrom.FieldRef.FieldPath)
		case e.ValueFrom.ResourceFieldRef != nil:
			var alloc corev1.ResourceList
			if alloc, err = m.nodeAllocatable(ctx); err == nil {
				name := e.ValueFrom.ResourceFieldRef.ContainerName
				if name == "" {
					name = c.Name
				}
				val, err = resource.ExtractResourceValueByContainerNameAndNodeAllocatable(e.ValueFrom.ResourceFieldRef, pod, name, alloc)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			val, err = m.configMapKey(ctx, pod.Namespace, e.ValueFrom.ConfigMapKeyRef)
		case e.ValueFrom.SecretKeyRef != nil:
			val, err = m.secretKey(ctx, pod.Namespace, e.ValueFrom.SecretKeyRef)
		}
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		env[e.Name] = val
	}
	return env, nil
}

// podFieldValue resolves a fieldRef the way the kubelet does for env.
func podFieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.podIPs":
		ips := make([]string, 0, len(pod.Status.PodIPs))
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

func (m *Manager) configMapKey(ctx context.Context, ns string, ref *corev1.ConfigMapKeySelector) (string, error) {
	cm, err := m.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
			return "", nil
		}
		return "", fmt.Errorf("get configMap %s/%s: %w", ns, ref.Name, err)
	}
	if v, ok := cm.Data[ref.Key]; ok {
		return v, nil
	}
	if isTrue(ref.Optional) {
		return "", nil
	}
	return "", fmt.Errorf("configMap %s/%s has no key %q", ns, ref.Name, ref.Key)
}

func (m *Manager) secretKey(ctx context.Context, ns string, ref *corev1.SecretKeySelector) (string, error) {
	s, err := m.cfg.Client.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
			return "", nil
		}
		return "", fmt.Errorf("get secret %s/%s: %w", ns, ref.Name, err)
	}
	if v, ok := s.Data[ref.Key]; ok {
		return string(v), nil
	}
	if isTrue(ref.Optional) {
		return "", nil
	}
	return "", fmt.Errorf("secret %s/%s has no key %q", ns, ref.Name, ref.Key)
}
