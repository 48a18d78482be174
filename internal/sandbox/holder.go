package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// holderSpec is what Start hands to the holder process, as JSON in a file.
type holderSpec struct {
	Hostname    string
	HostNetwork bool
	Rootfs      string  // mount point of the pod root (an empty directory on the host)
	Scratch     string  // mount point of the tmpfs holding the overlay's upper layer
	Mounts      []Mount // Files (already written under Dir) and pod-wide mounts, in order
	Masked      []string
}

// holderReady is the byte the holder writes on its readiness pipe once the pod
// is set up; anything else written there is an error message.
const holderReady = 0

// HolderMain is the `sandbox-holder <spec.json>` entry point (args exclude the
// subcommand). Start runs it with fd 3 as the readiness pipe, already inside
// new mount, UTS, IPC (and network) namespaces. It prepares the pod root,
// reports readiness, then idles until SIGTERM or SIGKILL: while it lives, the
// pod's namespaces and mount tree live.
func HolderMain(args []string) int {
	ready := os.NewFile(3, "ready-pipe")
	if len(args) != 1 {
		fmt.Fprintln(ready, "usage: sandbox-holder <spec.json>")
		return 2
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGTERM, unix.SIGINT)
	if err := setUpPod(args[0]); err != nil {
		fmt.Fprintf(ready, "sandbox holder: %v", err)
		fmt.Fprintf(os.Stderr, "sandbox holder: %v\n", err)
		return 1
	}
	if _, err := ready.Write([]byte{holderReady}); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox holder: report readiness: %v\n", err)
		return 1
	}
	ready.Close()
	<-stop
	return 0
}

func setUpPod(specPath string) error {
	var spec holderSpec
	if err := readJSON(specPath, &spec); err != nil {
		return err
	}
	// Slave, not private: nothing mounted here propagates back to the host,
	// but a mount the kubelet makes later under a shared host mount still
	// reaches this namespace (and so containers started after it).
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts of the pod namespace slaves of the host: %w", err)
	}
	if err := mountRootfs(spec); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fmt.Errorf("set hostname %q: %w", spec.Hostname, err)
	}
	if !spec.HostNetwork {
		// A new network namespace starts with lo down; pods expect localhost to work.
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find loopback in pod network namespace: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("bring up loopback in pod network namespace: %w", err)
		}
	}
	return nil
}

// mountRootfs builds the pod root at spec.Rootfs: the host's root filesystem
// as the read-only lower layer of an overlay whose writes land in a tmpfs,
// then the kernel filesystems and the pod's files and mounts on top.
func mountRootfs(spec holderSpec) error {
	if err := unix.Mount("tmpfs", spec.Scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mount tmpfs for the pod's writable layer at %s: %w", spec.Scratch, err)
	}
	upper, work := filepath.Join(spec.Scratch, "upper"), filepath.Join(spec.Scratch, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("create overlay directory: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", upper, work)
	if err := unix.Mount("overlay", spec.Rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount pod root overlay at %s (%s): %w", spec.Rootfs, opts, err)
	}
	root, err := openRoot(spec.Rootfs)
	if err != nil {
		return err
	}
	defer root.Close()

	const nosuidNodev = unix.MS_NOSUID | unix.MS_NODEV
	steps := []func() error{
		func() error { return mountFS(root, "/proc", "proc", nosuidNodev|unix.MS_NOEXEC, "") },
		// sysfs shows the network devices of the mounting process's netns: the pod's.
		func() error { return mountFS(root, "/sys", "sysfs", nosuidNodev|unix.MS_NOEXEC|unix.MS_RDONLY, "") },
		func() error { return mountDev(root) },
		func() error { return mountFS(root, "/tmp", "tmpfs", nosuidNodev, "mode=1777") },
	}
	for _, p := range spec.Masked {
		steps = append(steps, func() error {
			return mountFS(root, p, "tmpfs", nosuidNodev|unix.MS_NOEXEC|unix.MS_RDONLY, "size=4k,mode=0755")
		})
	}
	for _, m := range spec.Mounts {
		steps = append(steps, func() error { return bindInto(root, m) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// mountDev gives the pod a minimal /dev: a tmpfs with the usual device
// nodes, its own devpts instance (whose ptmx the kubelet opens for TTYs,
// see ptmxPath), /dev/shm and a POSIX message queue fs for its IPC namespace.
func mountDev(root *os.File) error {
	if err := mountFS(root, "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=0755,size=65536k"); err != nil {
		return err
	}
	// The device nodes container runtimes give a pod; the host's disks and
	// the rest of its /dev stay out of reach.
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bindInto(root, Mount{Source: "/dev/" + d, Target: "/dev/" + d}); err != nil {
			return err
		}
	}
	const nosuidNoexec = unix.MS_NOSUID | unix.MS_NOEXEC
	if err := mountFS(root, "/dev/pts", "devpts", nosuidNoexec, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return err
	}
	if err := mountFS(root, "/dev/shm", "tmpfs", nosuidNoexec|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	if err := mountFS(root, "/dev/mqueue", "mqueue", nosuidNoexec|unix.MS_NODEV, ""); err != nil {
		return err
	}
	dev, err := mountpoint(root, "/dev", true)
	if err != nil {
		return err
	}
	defer dev.Close()
	links := [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], int(dev.Fd()), l[1]); err != nil {
			return fmt.Errorf("create /dev/%s in pod root: %w", l[1], err)
		}
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse spec %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}
