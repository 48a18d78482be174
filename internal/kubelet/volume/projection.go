package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/volume/configmap"
	"k8s.io/kubernetes/pkg/volume/secret"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
)

// defaultFileMode is the API default for defaultMode (420 = 0644): the
// kubelet writes secrets world-readable inside the pod's volume too.
const defaultFileMode int32 = 0o644

// writeProjection computes the files of a configMap, secret, downwardAPI or
// projected volume and writes them with the kubelet's AtomicWriter, which
// swaps the ..data symlink only when some content changed.
func (m *Manager) writeProjection(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, k kind) error {
	payload, err := m.payload(ctx, pod, v, k)
	if err != nil {
		return err
	}
	dir := m.volumeDir(pod.UID, v.Name)
	if err := m.ensureVolumeDir(dir, k.inMemory() && !m.cfg.DisableSecretTmpfs, nil); err != nil {
		return err
	}
	w, err := volumeutil.NewAtomicWriter(dir, fmt.Sprintf("pod %s/%s volume %s", pod.Namespace, pod.Name, v.Name))
	if err != nil {
		return fmt.Errorf("prepare writer: %w", err)
	}
	setPerms := func(string) error { return applyFSGroup(dir, fsGroup(pod), true) }
	if err := w.Write(payload, setPerms); err != nil {
		return fmt.Errorf("write files: %w", err)
	}
	return nil
}

func (m *Manager) payload(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, k kind) (map[string]volumeutil.FileProjection, error) {
	switch k {
	case kindConfigMap:
		s := v.ConfigMap
		return m.configMapPayload(ctx, pod.Namespace, s.Name, s.Items, modeOrDefault(s.DefaultMode), isTrue(s.Optional))
	case kindSecret:
		s := v.Secret
		return m.secretPayload(ctx, pod.Namespace, s.SecretName, s.Items, modeOrDefault(s.DefaultMode), isTrue(s.Optional))
	case kindDownwardAPI:
		return m.downwardAPIPayload(ctx, pod, v.DownwardAPI.Items, modeOrDefault(v.DownwardAPI.DefaultMode))
	case kindProjected:
		return m.projectedPayload(ctx, pod, v.Name, v.Projected)
	}
	return nil, fmt.Errorf("volume kind %d has no files", k)
}

func (m *Manager) configMapPayload(ctx context.Context, ns, name string, items []corev1.KeyToPath, mode int32, optional bool) (map[string]volumeutil.FileProjection, error) {
	cm, err := m.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		cm, err = &corev1.ConfigMap{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get configMap %s/%s (create it, or mark the volume optional): %w", ns, name, err)
	}
	p, err := configmap.MakePayload(items, cm, &mode, optional)
	if err != nil {
		return nil, fmt.Errorf("configMap %s/%s: %w", ns, name, err)
	}
	return p, nil
}

func (m *Manager) secretPayload(ctx context.Context, ns, name string, items []corev1.KeyToPath, mode int32, optional bool) (map[string]volumeutil.FileProjection, error) {
	s, err := m.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		s, err = &corev1.Secret{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s (create it, or mark the volume optional): %w", ns, name, err)
	}
	p, err := secret.MakePayload(items, s, &mode, optional)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return p, nil
}

// downwardAPIPayload mirrors the kubelet's downwardapi.CollectData, with the
// Node's allocatable read from the API only when a resourceFieldRef needs it.
func (m *Manager) downwardAPIPayload(ctx context.Context, pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode int32) (map[string]volumeutil.FileProjection, error) {
	var allocatable corev1.ResourceList
	p := make(map[string]volumeutil.FileProjection, len(items))
	for _, it := range items {
		f := volumeutil.FileProjection{Mode: mode}
		if it.Mode != nil {
			f.Mode = *it.Mode
		}
		switch {
		case it.FieldRef != nil:
			val, err := fieldpath.ExtractFieldPathAsString(pod, it.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
			}
			f.Data = []byte(val)
		case it.ResourceFieldRef != nil:
			if allocatable == nil {
				var err error
				if allocatable, err = m.nodeAllocatable(ctx); err != nil {
					return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
				}
			}
			val, err := resource.ExtractResourceValueByContainerNameAndNodeAllocatable(it.ResourceFieldRef, pod, it.ResourceFieldRef.ContainerName, allocatable)
			if err != nil {
				return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
			}
			f.Data = []byte(val)
		}
		p[filepath.Clean(it.Path)] = f
	}
	return p, nil
}

func (m *Manager) nodeAllocatable(ctx context.Context) (corev1.ResourceList, error) {
	if m.cfg.NodeName == "" {
		return nil, fmt.Errorf("resource limits default to the node's allocatable, but the volume manager has no NodeName configured")
	}
	n, err := m.cfg.Client.CoreV1().Nodes().Get(ctx, m.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %s for its allocatable resources: %w", m.cfg.NodeName, err)
	}
	if n.Status.Allocatable != nil {
		return n.Status.Allocatable, nil
	}
	return corev1.ResourceList{}, nil
}

// projectedPayload merges the sources of a projected volume in order, as
// the kubelet's projected plugin does (a later source wins a shared path).
func (m *Manager) projectedPayload(ctx context.Context, pod *corev1.Pod, volName string, pv *corev1.ProjectedVolumeSource) (map[string]volumeutil.FileProjection, error) {
	mode := modeOrDefault(pv.DefaultMode)
	payload := map[string]volumeutil.FileProjection{}
	for i, src := range pv.Sources {
		var (
			p   map[string]volumeutil.FileProjection
			err error
		)
		switch {
		case src.ConfigMap != nil:
			s := src.ConfigMap
			p, err = m.configMapPayload(ctx, pod.Namespace, s.Name, s.Items, mode, isTrue(s.Optional))
		case src.Secret != nil:
			s := src.Secret
			p, err = m.secretPayload(ctx, pod.Namespace, s.Name, s.Items, mode, isTrue(s.Optional))
		case src.DownwardAPI != nil:
			p, err = m.downwardAPIPayload(ctx, pod, src.DownwardAPI.Items, mode)
		case src.ServiceAccountToken != nil:
			p, err = m.tokenPayload(ctx, pod, volName, i, src.ServiceAccountToken, mode)
		case src.ClusterTrustBundle != nil:
			err = fmt.Errorf("projected source %d: clusterTrustBundle is not supported by knet's kubelet; project the bundle from a configMap instead", i)
		case src.PodCertificate != nil:
			err = fmt.Errorf("projected source %d: podCertificate is not supported by knet's kubelet", i)
		default:
			err = fmt.Errorf("projected source %d sets no source", i)
		}
		if err != nil {
			return nil, err
		}
		for path, f := range p {
			payload[path] = f
		}
	}
	return payload, nil
}

// tokenPayload is a serviceAccountToken source. With an fsGroup the token is
// 0600 before the group read bit is added (0640), as on the kubelet.
func (m *Manager) tokenPayload(ctx context.Context, pod *corev1.Pod, volName string, idx int, src *corev1.ServiceAccountTokenProjection, mode int32) (map[string]volumeutil.FileProjection, error) {
	token, err := m.tokens.get(ctx, pod, tokenKey{uid: pod.UID, volume: volName, source: idx}, src)
	if err != nil {
		return nil, err
	}
	if fsGroup(pod) != nil {
		mode = 0o600
	}
	return map[string]volumeutil.FileProjection{src.Path: {Data: []byte(token), Mode: mode}}, nil
}

// ensureVolumeDir creates a volume directory (mode 0777 like an emptyDir, so
// any container user can use it), on a tmpfs when inMemory.
func (m *Manager) ensureVolumeDir(dir string, inMemory bool, sizeLimitBytes *int64) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create volume dir: %w", err)
	}
	if inMemory {
		if err := mountTmpfs(dir, sizeLimitBytes); err != nil {
			return err
		}
	}
	// Chmod after mounting: the tmpfs root is what containers see.
	if err := os.Chmod(dir, 0o777); err != nil {
		return fmt.Errorf("set volume dir mode: %w", err)
	}
	return nil
}

func modeOrDefault(m *int32) int32 {
	if m != nil {
		return *m
	}
	return defaultFileMode
}

func isTrue(b *bool) bool { return b != nil && *b }

func fsGroup(pod *corev1.Pod) *int64 {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroup
}
