package kubelet

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// statusFieldValue returns the value of a downward API status field that is
// only known once the pod sandbox has its network.
func statusFieldValue(path string, podIPs, hostIPs []string) (string, bool) {
	first := func(s []string) string {
		if len(s) == 0 {
			return ""
		}
		return s[0]
	}
	switch path {
	case "status.podIP":
		return first(podIPs), true
	case "status.podIPs":
		return strings.Join(podIPs, ","), true
	case "status.hostIP":
		return first(hostIPs), true
	case "status.hostIPs":
		return strings.Join(hostIPs, ","), true
	}
	return "", false
}

// containerEnv returns the container's final environment. virtual-kubelet
// resolved resolved (the container as passed to CreatePod) before the pod
// had an IP, so fields that depend on the network are resolved again here
// from the container as written in the pod spec (orig), and so are
// resourceFieldRefs, which virtual-kubelet leaves out (limits default to
// the node's allocatable, as in the kubelet).
func containerEnv(resolved *corev1.Container, orig *corev1.Container, podIPs, hostIPs []string, allocatable corev1.ResourceList) map[string]string {
	env := make(map[string]string, len(resolved.Env))
	for _, e := range resolved.Env {
		env[e.Name] = e.Value
	}
	if orig == nil {
		return env
	}
	var changed []string
	for _, e := range orig.Env {
		if e.ValueFrom == nil {
			continue
		}
		if fr := e.ValueFrom.FieldRef; fr != nil {
			if v, ok := statusFieldValue(fr.FieldPath, podIPs, hostIPs); ok {
				env[e.Name] = v
				changed = append(changed, e.Name)
			}
		}
		if rf := e.ValueFrom.ResourceFieldRef; rf != nil {
			if v, err := resource.ExtractContainerResourceValue(rf, withDefaultLimits(orig, allocatable)); err == nil {
				env[e.Name] = v
				changed = append(changed, e.Name)
			}
		}
	}
	if len(changed) == 0 {
		return env
	}
	// Literal values that referenced a re-resolved variable, e.g.
	// URL=http://$(POD_IP):8080, are expanded again, in spec order.
	for _, e := range orig.Env {
		if e.ValueFrom != nil || !strings.Contains(e.Value, "$(") {
			continue
		}
		for _, name := range changed {
			if strings.Contains(e.Value, "$("+name+")") {
				env[e.Name] = expansion.Expand(e.Value, expansion.MappingFuncFor(env))
				break
			}
		}
	}
	return env
}

func withDefaultLimits(c *corev1.Container, allocatable corev1.ResourceList) *corev1.Container {
	out := c.DeepCopy()
	if out.Resources.Limits == nil {
		out.Resources.Limits = corev1.ResourceList{}
	}
	for name, q := range allocatable {
		if _, ok := out.Resources.Limits[name]; !ok {
			out.Resources.Limits[name] = q
		}
	}
	return out
}
