package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// containerSpec is what StartContainer hands to container-init, as JSON in a file.
type containerSpec struct {
	Rootfs     string
	Mounts     []Mount
	WorkingDir string
	User       *User
	Args       []string
	Env        []string
}

// ErrExecutableNotFound matches (errors.Is) the ExitStatus.Err of a container
// whose program does not exist in the pod.
var ErrExecutableNotFound = errors.New("executable not found")

// StartError says why a container never ran its program. The kubelet shows
// Reason as the container's waiting/terminated reason and Message as its message.
type StartError struct {
	Reason  string // "ExecutableNotFound", "MountFailed" or "SetupFailed"
	Message string
}

func (e *StartError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrExecutableNotFound) work.
func (e *StartError) Is(target error) bool {
	return target == ErrExecutableNotFound && e.Reason == reasonNotFound
}

const (
	reasonNotFound    = "ExecutableNotFound"
	reasonMountFailed = "MountFailed"
	reasonSetup       = "SetupFailed"
)

// setupExecing is written on the setup pipe just before exec: a pipe that
// ends without it means container-init never got that far.
const setupExecing = 0

// defaultPath is the PATH container runtimes use when the image sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ContainerInitMain is the `container-init <spec.json>` entry point (args
// exclude the subcommand). StartContainer runs it through nsenter and unshare,
// so it starts in its own copy of the pod's mount namespace, with fd 3 as the
// setup pipe. It mounts the container's volumes, pivots into the pod root,
// drops to the container's user and execs the program. Just before exec it
// writes setupExecing on the pipe, which exec then closes (close-on-exec);
// on failure the pipe carries a JSON StartError, and the exit code is 127
// (not found) or 126.
func ContainerInitMain(args []string) int {
	report := os.NewFile(3, "setup-pipe")
	// Close-on-exec: a successful exec closes the pipe, which is how the
	// parent learns the program started.
	unix.CloseOnExec(3)
	fail := func(reason string, err error) int {
		json.NewEncoder(report).Encode(StartError{Reason: reason, Message: err.Error()})
		if reason == reasonNotFound {
			return 127
		}
		return 126
	}
	if len(args) != 1 {
		return fail(reasonSetup, errors.New("usage: container-init <spec.json>"))
	}
	var spec containerSpec
	if err := readJSON(args[0], &spec); err != nil {
		return fail(reasonSetup, err)
	}
	if err := mountVolumes(spec); err != nil {
		return fail(reasonMountFailed, err)
	}
	if err := enterRoot(spec); err != nil {
		return fail(reasonSetup, err)
	}
	if u := spec.User; u != nil {
		if err := setUser(*u); err != nil {
			return fail(reasonSetup, err)
		}
	}
	path, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		return fail(reasonNotFound, err)
	}
	report.Write([]byte{setupExecing})
	err = unix.Exec(path, spec.Args, spec.Env)
	if errors.Is(err, unix.ENOENT) {
		// The file exists, so its interpreter (#! line or ELF loader) does not.
		return fail(reasonNotFound, fmt.Errorf("exec %s inside the pod: interpreter not found: %w", path, err))
	}
	return fail(reasonSetup, fmt.Errorf("exec %s inside the pod: %w", path, err))
}

func mountVolumes(spec containerSpec) error {
	if len(spec.Mounts) == 0 {
		return nil
	}
	root, err := openRoot(spec.Rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, m := range spec.Mounts {
		if err := bindInto(root, m); err != nil {
			return err
		}
	}
	return nil
}

// enterRoot makes the pod root this process's / and detaches the rest of the
// host's tree, then changes to the working directory (created if missing, as
// runc does).
func enterRoot(spec containerSpec) error {
	if err := unix.Chdir(spec.Rootfs); err != nil {
		return fmt.Errorf("enter pod root %s: %w", spec.Rootfs, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one; the
	// detach below then removes it without needing a directory for it.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into pod root %s: %w", spec.Rootfs, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach host root: %w", err)
	}
	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return fmt.Errorf("create working directory %s: %w", wd, err)
	}
	if err := unix.Chdir(wd); err != nil {
		return fmt.Errorf("change to working directory %s: %w", wd, err)
	}
	return nil
}

func setUser(u User) error {
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	// Go applies these to every thread of the process.
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("set supplementary groups %v: %w", u.Groups, err)
	}
	if err := unix.Setgid(int(u.GID)); err != nil {
		return fmt.Errorf("set gid %d: %w", u.GID, err)
	}
	if err := unix.Setuid(int(u.UID)); err != nil {
		return fmt.Errorf("set uid %d: %w", u.UID, err)
	}
	return nil
}

// lookPath resolves file the way execvp does, but against the container's
// PATH (from env) rather than this process's.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := checkExecutable(file); err != nil {
			return "", fmt.Errorf("executable %q not found inside the pod: %w", file, err)
		}
		return file, nil
	}
	path, ok := defaultPath, false
	for _, kv := range env {
		if v, found := strings.CutPrefix(kv, "PATH="); found {
			path, ok = v, true
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	source := "default PATH"
	if ok {
		source = "PATH"
	}
	return "", fmt.Errorf("executable %q not found in %s %q inside the pod", file, source, path)
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return fmt.Errorf("%s is not executable: %w", p, err)
	}
	return nil
}
