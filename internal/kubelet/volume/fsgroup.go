package volume

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// applyFSGroup gives a volume to the pod's fsGroup as the kubelet's
// SetVolumeOwnership does: group-own every entry, add group read (and write
// unless readOnly) to files, and group rwx plus setgid to directories so new
// files inherit the group. Symlinks (the ..data links) are re-owned but not
// chmodded. Without an fsGroup nothing changes.
func applyFSGroup(dir string, gid *int64, readOnly bool) error {
	if gid == nil {
		return nil
	}
	const (
		rwMask   = 0o660
		roMask   = 0o440
		execMask = 0o110
	)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, -1, int(*gid)); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mask := fs.FileMode(rwMask)
		if readOnly {
			mask = roMask
		}
		if d.IsDir() {
			mask |= fs.ModeSetgid | execMask
		}
		return os.Chmod(p, info.Mode()|mask)
	})
	if err != nil {
		return fmt.Errorf("apply fsGroup %d to %s: %w", *gid, dir, err)
	}
	return nil
}
