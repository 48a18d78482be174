package kubelet

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/kubelet/envvars"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
	"k8s.io/utils/ptr"
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

// envSources are the API objects a container's environment may read.
type envSources interface {
	ConfigMap(namespace, name string) (*corev1.ConfigMap, error)
	Secret(namespace, name string) (*corev1.Secret, error)
	Services(namespace string) ([]*corev1.Service, error)
	// KubernetesServiceKnown reports whether default/kubernetes, the Service every
	// container's KUBERNETES_SERVICE_HOST comes from, is known (or no API is in use).
	KubernetesServiceKnown() bool
}

// listerEnvSources reads env sources from the informer caches virtual-kubelet keeps.
type listerEnvSources struct {
	configMaps corev1listers.ConfigMapLister
	secrets    corev1listers.SecretLister
	services   corev1listers.ServiceLister
}

func (l listerEnvSources) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return l.configMaps.ConfigMaps(ns).Get(name)
}

func (l listerEnvSources) Secret(ns, name string) (*corev1.Secret, error) {
	return l.secrets.Secrets(ns).Get(name)
}

func (l listerEnvSources) Services(ns string) ([]*corev1.Service, error) {
	return l.services.Services(ns).List(labels.Everything())
}

func (l listerEnvSources) KubernetesServiceKnown() bool {
	_, err := l.services.Services(metav1.NamespaceDefault).Get("kubernetes")
	return err == nil
}

// noEnvSources is the empty cluster (before virtual-kubelet hands over its informers, and in
// tests without an API): no Services, and every ConfigMap and Secret missing.
type noEnvSources struct{}

func (noEnvSources) ConfigMap(_, name string) (*corev1.ConfigMap, error) {
	return nil, apierrors.NewNotFound(corev1.Resource("configmaps"), name)
}

func (noEnvSources) Secret(_, name string) (*corev1.Secret, error) {
	return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
}

func (noEnvSources) Services(string) ([]*corev1.Service, error) { return nil, nil }

func (noEnvSources) KubernetesServiceKnown() bool { return true }

// envInputs is what resolveEnv needs beyond the API objects.
type envInputs struct {
	Pod         *corev1.Pod
	Container   *corev1.Container
	PodIPs      []string
	HostIPs     []string
	Allocatable corev1.ResourceList // limits default to it, as in the kubelet
}

// resolveEnv computes a container's environment as the kubelet's makeEnvironmentVariables
// does: Service links first (the pod's namespace when enableServiceLinks, and always the
// master `kubernetes` Service), then envFrom in order, then env in order with $(VAR) expansion
// against what came before. Fields that depend on the pod's network (status.podIP, hostIP)
// are known here, after CNI, which is why knet resolves env itself instead of virtual-kubelet.
// A missing non-optional ConfigMap, Secret or key is an error, as in the kubelet
// (CreateContainerConfigError).
func resolveEnv(in envInputs, src envSources) (map[string]string, error) {
	pod, c := in.Pod, in.Container
	env := map[string]string{}
	serviceEnv, err := serviceLinkEnv(pod, src)
	if err != nil {
		return nil, err
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := src.ConfigMap(pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if ptr.Deref(from.ConfigMapRef.Optional, false) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("couldn't get configMap %s/%s: %w", pod.Namespace, from.ConfigMapRef.Name, err)
			}
			for k, v := range cm.Data {
				putEnv(env, from.Prefix+k, v)
			}
		case from.SecretRef != nil:
			sec, err := src.Secret(pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if ptr.Deref(from.SecretRef.Optional, false) && apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("couldn't get secret %s/%s: %w", pod.Namespace, from.SecretRef.Name, err)
			}
			for k, v := range sec.Data {
				putEnv(env, from.Prefix+k, string(v))
			}
		}
	}
	mapping := expansion.MappingFuncFor(env, serviceEnv)
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expansion.Expand(e.Value, mapping)
			continue
		}
		v, ok, err := envValueFrom(in, e, src)
		if err != nil {
			return nil, err
		}
		if ok {
			env[e.Name] = v
		}
	}
	for k, v := range serviceEnv {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	return env, nil
}

// putEnv sets an envFrom key; keys that are not valid variable names are skipped, as the
// kubelet does (it reports them in an event).
func putEnv(env map[string]string, k, v string) {
	if len(validation.IsEnvVarName(k)) == 0 {
		env[k] = v
	}
}

func envValueFrom(in envInputs, e corev1.EnvVar, src envSources) (string, bool, error) {
	pod := in.Pod
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		if v, ok := statusFieldValue(vf.FieldRef.FieldPath, in.PodIPs, in.HostIPs); ok {
			return v, true, nil
		}
		v, err := fieldpath.ExtractFieldPathAsString(pod, vf.FieldRef.FieldPath)
		if err != nil {
			switch vf.FieldRef.FieldPath {
			case "spec.nodeName":
				return pod.Spec.NodeName, true, nil
			case "spec.serviceAccountName":
				return pod.Spec.ServiceAccountName, true, nil
			}
			return "", false, fmt.Errorf("env %s: %w", e.Name, err)
		}
		return v, true, nil
	case vf.ResourceFieldRef != nil:
		v, err := resource.ExtractContainerResourceValue(vf.ResourceFieldRef, withDefaultLimits(in.Container, in.Allocatable))
		if err != nil {
			return "", false, fmt.Errorf("env %s: %w", e.Name, err)
		}
		return v, true, nil
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		optional := ptr.Deref(ref.Optional, false)
		cm, err := src.ConfigMap(pod.Namespace, ref.Name)
		if err != nil {
			if optional && apierrors.IsNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't get configMap %s/%s: %w", pod.Namespace, ref.Name, err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if b, bok := cm.BinaryData[ref.Key]; bok {
				return string(b), true, nil
			}
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return v, true, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		optional := ptr.Deref(ref.Optional, false)
		sec, err := src.Secret(pod.Namespace, ref.Name)
		if err != nil {
			if optional && apierrors.IsNotFound(err) {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't get secret %s/%s: %w", pod.Namespace, ref.Name, err)
		}
		v, ok := sec.Data[ref.Key]
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return string(v), true, nil
	}
	return "", false, nil
}

// serviceLinkEnv is the docker-link style variables of the Services a pod sees: its own
// namespace's when enableServiceLinks (default true), and default/kubernetes always.
func serviceLinkEnv(pod *corev1.Pod, src envSources) (map[string]string, error) {
	var services []*corev1.Service
	if ptr.Deref(pod.Spec.EnableServiceLinks, corev1.DefaultEnableServiceLinks) {
		own, err := src.Services(pod.Namespace)
		if err != nil {
			return nil, err
		}
		services = append(services, own...)
	}
	if pod.Namespace != metav1.NamespaceDefault || !ptr.Deref(pod.Spec.EnableServiceLinks, corev1.DefaultEnableServiceLinks) {
		defaults, err := src.Services(metav1.NamespaceDefault)
		if err != nil {
			return nil, err
		}
		for _, s := range defaults {
			if s.Name == "kubernetes" {
				services = append(services, s)
			}
		}
	}
	var visible []*corev1.Service
	for _, s := range services {
		if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
			visible = append(visible, s)
		}
	}
	env := map[string]string{}
	for _, e := range envvars.FromServices(visible) {
		env[e.Name] = e.Value
	}
	return env, nil
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
