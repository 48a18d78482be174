package volume

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// setUpEmptyDir creates an emptyDir: a directory, or a tmpfs limited to
// sizeLimit for medium Memory. An existing one is kept with its content,
// so SetUp can run again for a running pod.
func (m *Manager) setUpEmptyDir(pod *corev1.Pod, v *corev1.Volume) error {
	dir := m.volumeDir(pod.UID, v.Name)
	var size *int64
	inMemory := false
	switch v.EmptyDir.Medium {
	case corev1.StorageMediumDefault:
	case corev1.StorageMediumMemory:
		inMemory = true
		if l := v.EmptyDir.SizeLimit; l != nil && l.Sign() > 0 {
			b := l.Value()
			size = &b
		}
	default:
		return fmt.Errorf("emptyDir medium %q is not supported by knet's kubelet; use \"\" or Memory", v.EmptyDir.Medium)
	}
	if err := m.ensureVolumeDir(dir, inMemory, size); err != nil {
		return err
	}
	return applyFSGroup(dir, fsGroup(pod), false)
}

// mountTmpfs mounts a tmpfs on dir unless one is already there. Without a
// size the kernel's default (half of RAM) applies.
func mountTmpfs(dir string, sizeBytes *int64) error {
	mounted, err := mountinfo.Mounted(dir)
	if err != nil {
		return fmt.Errorf("check mounts on %s: %w", dir, err)
	}
	if mounted {
		return nil
	}
	opts := "mode=0777"
	if sizeBytes != nil {
		opts += fmt.Sprintf(",size=%d", *sizeBytes)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s (the kubelet needs CAP_SYS_ADMIN, or set DisableSecretTmpfs for secrets): %w", dir, err)
	}
	return nil
}

// unmountAllBelow unmounts every mount point at or below dir, deepest first,
// and fails if one stays: removing the directory tree must never reach into
// a mounted filesystem.
func unmountAllBelow(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("list mounts below %s: %w", dir, err)
	}
	points := make([]string, 0, len(mounts))
	for _, mi := range mounts {
		points = append(points, mi.Mountpoint)
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		// A mount stacked twice shows twice; EINVAL means already gone.
		if err := unix.Unmount(p, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s (a process may still use it): %w", p, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	left, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("list mounts below %s: %w", dir, err)
	}
	if len(left) > 0 {
		var ps []string
		for _, mi := range left {
			ps = append(ps, mi.Mountpoint)
		}
		return fmt.Errorf("mounts remain below %s: %s", dir, strings.Join(ps, ", "))
	}
	return nil
}

// pathExists reports whether p exists, following symlinks.
func pathExists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
