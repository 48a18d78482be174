package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// The pod root is the host's root filesystem seen through an overlay, so it
// holds the host's absolute symlinks (/etc/resolv.conf often points into
// /run). Every mount target is therefore resolved inside the pod root with
// pathrs (symlinks scoped to the root), and mounts go onto the resolved file
// handle, never onto a path string that could lead back to the host.

// bindInto bind-mounts the host path m.Source at m.Target inside root,
// recursively, read-only (the whole subtree) if asked.
func bindInto(root *os.File, m Mount) error {
	st, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("bind %s to %s: source: %w", m.Source, m.Target, err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, m.Source,
		unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("bind %s to %s: open_tree: %w", m.Source, m.Target, err)
	}
	defer unix.Close(tree)
	if m.ReadOnly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("bind %s to %s: make read-only: %w", m.Source, m.Target, err)
		}
	}
	target, err := mountpoint(root, m.Target, st.IsDir())
	if err != nil {
		return fmt.Errorf("bind %s to %s: %w", m.Source, m.Target, err)
	}
	defer target.Close()
	err = unix.MoveMount(tree, "", int(target.Fd()), "",
		unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("bind %s to %s: move_mount: %w", m.Source, m.Target, err)
	}
	return nil
}

// mountFS mounts a fresh filesystem (proc, sysfs, tmpfs) at target inside root.
func mountFS(root *os.File, target, fstype string, flags uintptr, data string) error {
	dir, err := mountpoint(root, target, true)
	if err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, target, err)
	}
	defer dir.Close()
	if err := unix.Mount(fstype, procFD(dir), fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s at %s: %w", fstype, target, err)
	}
	return nil
}

// procFD names an open file by its /proc/self/fd magic link, which mount(2)
// follows to exactly that file.
func procFD(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// mountpoint returns an O_PATH handle on target inside root, creating it (a
// directory, or an empty file when dir is false) and its parents as needed.
func mountpoint(root *os.File, target string, dir bool) (*os.File, error) {
	if dir {
		h, err := pathrs.MkdirAllHandle(root, target, 0o755)
		if err != nil {
			return nil, fmt.Errorf("create directory %s in pod root: %w", target, err)
		}
		return h, nil
	}
	parent, err := pathrs.MkdirAllHandle(root, filepath.Dir(target), 0o755)
	if err != nil {
		return nil, fmt.Errorf("create directory %s in pod root: %w", filepath.Dir(target), err)
	}
	defer parent.Close()
	pfd, name := int(parent.Fd()), filepath.Base(target)

	var st unix.Stat_t
	err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		// Replace the symlink in the pod's own layer: the pod must see our file
		// at this path, not whatever the host's link points to.
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return nil, fmt.Errorf("replace symlink %s in pod root: %w", target, err)
		}
		err = unix.ENOENT
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil, fmt.Errorf("%s is a directory in the pod root; cannot mount a file on it", target)
	}
	if errors.Is(err, unix.ENOENT) {
		fd, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("create file %s in pod root: %w", target, err)
		}
		unix.Close(fd)
	} else if err != nil {
		return nil, fmt.Errorf("stat %s in pod root: %w", target, err)
	}
	fd, err := unix.Openat(pfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s in pod root: %w", target, err)
	}
	return os.NewFile(uintptr(fd), target), nil
}

// openRoot opens dir as the root handle for mountpoint.
func openRoot(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open pod root %s: %w", dir, err)
	}
	return f, nil
}
