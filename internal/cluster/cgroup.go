package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cgroup is a cgroup v2 directory holding every process a cluster started: the daemon's node
// processes and, as their descendants, every pod. Killing it stops exactly those processes,
// even after the daemon itself was killed, without looking anything up by name.
type Cgroup struct{ Path string }

// cgroup2Root finds where the unified (v2) hierarchy is mounted: /sys/fs/cgroup on pure v2
// machines, /sys/fs/cgroup/unified on hybrid ones.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4], nil
			}
		}
	}
	return "", errors.New("no cgroup2 hierarchy is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")
}

// OpenCgroup returns the cluster's cgroup, creating it if needed.
func OpenCgroup(name string) (*Cgroup, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(root, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return &Cgroup{Path: p}, nil
}

// Add moves a process into the cgroup; its future children start there too.
func (c *Cgroup) Add(pid int) error {
	return os.WriteFile(filepath.Join(c.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// Into makes cmd start inside the cgroup (clone3 CLONE_INTO_CGROUP), so not even its first
// child can escape. Close the returned file after cmd.Start.
func (c *Cgroup) Into(cmd *exec.Cmd) (*os.File, error) {
	f, err := os.Open(c.Path)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.Path, err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	return f, nil
}

// PIDs lists the processes in the cgroup.
func (c *Cgroup) PIDs() []int {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillAndRemove SIGKILLs every process in the cgroup (cgroup.kill), waits until it is empty and
// removes it. A missing cgroup is not an error.
func (c *Cgroup) KillAndRemove(timeout time.Duration) error {
	if _, err := os.Stat(c.Path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", c.Path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := os.Remove(c.Path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes %v after kill: %w", c.Path, c.PIDs(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
