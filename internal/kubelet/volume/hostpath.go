package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	corev1 "k8s.io/api/core/v1"
)

// checkHostPath applies a hostPath volume's type as the kubelet's
// hostPathTypeChecker does: the *OrCreate types create a missing directory
// (0755) or file (0644, its parent must exist); the others require the path
// to exist with that file type; an unset type checks nothing.
func checkHostPath(hp *corev1.HostPathVolumeSource) error {
	path := hp.Path
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	if t == corev1.HostPathUnset {
		return nil
	}
	fi, err := os.Stat(path)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return fmt.Errorf("hostPath %s: %w", path, err)
	}
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		if missing {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return fmt.Errorf("hostPath type check failed: create directory %s: %w", path, err)
			}
			return nil
		}
		return wantType(path, fi, t, fi.IsDir())
	case corev1.HostPathFileOrCreate:
		if missing {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath type check failed: create file %s (its parent directory must exist): %w", path, err)
			}
			return f.Close()
		}
		return wantType(path, fi, t, fi.Mode().IsRegular())
	}
	if missing {
		return fmt.Errorf("hostPath type check failed: %s does not exist (type %s needs it; create it on the node or use a *OrCreate type)", path, t)
	}
	switch t {
	case corev1.HostPathDirectory:
		return wantType(path, fi, t, fi.IsDir())
	case corev1.HostPathFile:
		return wantType(path, fi, t, fi.Mode().IsRegular())
	case corev1.HostPathSocket:
		return wantType(path, fi, t, fi.Mode()&fs.ModeSocket != 0)
	case corev1.HostPathCharDev:
		return wantType(path, fi, t, fi.Mode()&fs.ModeCharDevice != 0)
	case corev1.HostPathBlockDev:
		return wantType(path, fi, t, fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0)
	}
	return fmt.Errorf("hostPath %s: unknown type %q", path, t)
}

func wantType(path string, fi fs.FileInfo, t corev1.HostPathType, ok bool) error {
	if ok {
		return nil
	}
	return fmt.Errorf("hostPath type check failed: %s is not a %s (it is %s)", path, t, fileKind(fi))
}

func fileKind(fi fs.FileInfo) string {
	m := fi.Mode()
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a file"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "of mode " + m.String()
}
