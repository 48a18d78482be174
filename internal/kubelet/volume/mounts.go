package volume

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// podContainers lists init, regular and ephemeral containers; an ephemeral
// container's common part has the same fields as a Container.
func podContainers(pod *corev1.Pod) []*corev1.Container {
	var cs []*corev1.Container
	for i := range pod.Spec.InitContainers {
		cs = append(cs, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		cs = append(cs, &pod.Spec.Containers[i])
	}
	for i := range pod.Spec.EphemeralContainers {
		cs = append(cs, (*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon))
	}
	return cs
}

// containerMounts turns a container's volumeMounts into bind mounts, as the
// kubelet's makeMounts does.
func (m *Manager) containerMounts(ctx context.Context, pod *corev1.Pod, c *corev1.Container, kinds map[string]kind) ([]Mount, error) {
	var env map[string]string
	out := make([]Mount, 0, len(c.VolumeMounts))
	for _, vm := range c.VolumeMounts {
		k, ok := kinds[vm.Name]
		if !ok {
			return nil, fmt.Errorf("container %q mounts volume %q, which the pod does not define in spec.volumes", c.Name, vm.Name)
		}
		source := m.volumeDir(pod.UID, vm.Name)
		if k == kindHostPath {
			source = volumeByName(pod, vm.Name).HostPath.Path
		}
		subPath := vm.SubPath
		if vm.SubPathExpr != "" {
			if env == nil {
				var err error
				if env, err = m.containerEnv(ctx, pod, c); err != nil {
					return nil, fmt.Errorf("container %q volume %q: subPathExpr needs the container's environment: %w", c.Name, vm.Name, err)
				}
			}
			var err error
			if subPath, err = expandSubPath(vm.SubPathExpr, env); err != nil {
				return nil, fmt.Errorf("container %q volume %q: subPathExpr %q: %w", c.Name, vm.Name, vm.SubPathExpr, err)
			}
		}
		if subPath != "" {
			resolved, err := resolveSubPath(source, subPath)
			if err != nil {
				return nil, fmt.Errorf("container %q volume %q: %w", c.Name, vm.Name, err)
			}
			source = resolved
			if k.projected() {
				// Only this package writes these volumes (containers mount
				// them read-only), so the path through the volume's own
				// ..data symlink is safe to bind. It stays valid after an
				// update removes the old timestamped directory: the bind
				// made at container start pins the file it found, and a
				// restarted container gets the current one.
				source = filepath.Join(m.volumeDir(pod.UID, vm.Name), filepath.Clean(subPath))
			}
		}
		target := vm.MountPath
		if !filepath.IsAbs(target) {
			target = "/" + target
		}
		out = append(out, Mount{Source: source, Target: target, ReadOnly: vm.ReadOnly || k.projected()})
	}
	return out, nil
}

func volumeByName(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// expandSubPath expands $(VAR) references like the kubelet's
// ExpandContainerVolumeMounts: an unset or empty variable is an error.
func expandSubPath(expr string, env map[string]string) (string, error) {
	missing := map[string]bool{}
	out := expansion.Expand(expr, func(key string) string {
		v := env[key]
		if v == "" {
			missing[key] = true
		}
		return v
	})
	if len(missing) > 0 {
		keys := make([]string, 0, len(missing))
		for k := range missing {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return "", fmt.Errorf("missing value for %s", strings.Join(keys, ", "))
	}
	return out, nil
}

// resolveSubPath returns the node path to bind for a subPath of a volume.
// Like the kubelet it rejects absolute paths and "..", creates a missing
// subPath as a directory, and refuses a path whose symlinks lead outside the
// volume. The result has every symlink resolved, so a container cannot swap
// a directory of a writable volume for a symlink between this check and the
// bind mount and make the runtime follow it.
func resolveSubPath(volumePath, subPath string) (string, error) {
	if filepath.IsAbs(subPath) {
		return "", fmt.Errorf("subPath %q must be a relative path", subPath)
	}
	for _, elem := range strings.Split(filepath.ToSlash(subPath), "/") {
		if elem == ".." {
			return "", fmt.Errorf("subPath %q must not contain '..': it would leave the volume", subPath)
		}
	}
	root, err := filepath.EvalSymlinks(volumePath)
	if err != nil {
		return "", fmt.Errorf("resolve volume path: %w", err)
	}
	if err := checkInside(root, filepath.Join(root, subPath)); err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	// SecureJoin resolves symlinks without leaving root, so creating the
	// directory cannot escape even if the tree changed since the check.
	safe, err := securejoin.SecureJoin(root, subPath)
	if err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	exists, err := pathExists(safe)
	if err != nil {
		return "", fmt.Errorf("subPath %q: %w", subPath, err)
	}
	if !exists {
		fi, err := os.Stat(root)
		if err != nil {
			return "", fmt.Errorf("subPath %q: %w", subPath, err)
		}
		if err := os.MkdirAll(safe, fi.Mode().Perm()); err != nil {
			return "", fmt.Errorf("create subPath %q: %w", subPath, err)
		}
	}
	return safe, nil
}

// checkInside fails when the deepest existing ancestor of p (p included)
// resolves, through symlinks, to a place outside root.
func checkInside(root, p string) error {
	for cur := p; ; cur = filepath.Dir(cur) {
		real, err := filepath.EvalSymlinks(cur)
		if err != nil {
			if os.IsNotExist(err) && cur != root {
				continue
			}
			return err
		}
		if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
			return fmt.Errorf("it resolves to %s, outside the volume", real)
		}
		return nil
	}
}
