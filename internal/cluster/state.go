package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// stateFile holds the layout of a cluster; its presence marks the cluster as existing.
const stateFile = "cluster.json"

// SaveLayout writes the layout into the cluster's state directory.
func SaveLayout(l Layout) error {
	if err := os.MkdirAll(l.Dir(), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.Dir(), stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.Dir(), stateFile))
}

// LoadLayout reads the layout of an existing cluster.
func LoadLayout(name string) (Layout, error) {
	var l Layout
	b, err := os.ReadFile(filepath.Join(StateRoot, name, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return l, fmt.Errorf("no cluster named %q on this machine (start one with `knet up --name %s`)", name, name)
	}
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("corrupt %s: %w", filepath.Join(StateRoot, name, stateFile), err)
	}
	return l, nil
}

// Names lists the clusters that have state on this machine.
func Names() []string {
	matches, _ := filepath.Glob(filepath.Join(StateRoot, "*", stateFile))
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	return names
}

// FreeIndex returns the lowest index no other cluster on the machine uses; `name` keeps its
// index if it already has state.
func FreeIndex(name string) int {
	used := map[int]bool{}
	for _, n := range Names() {
		if l, err := LoadLayout(n); err == nil {
			if n == name {
				return l.Index
			}
			used[l.Index] = true
		}
	}
	i := 0
	for used[i] {
		i++
	}
	return i
}

// DaemonLock is held by a cluster's daemon for its whole life, so a second `knet up` with the
// same name can tell that the cluster is running without signalling anything.
type DaemonLock struct{ f *os.File }

// LockDaemon takes the daemon lock of cluster dir, failing if another daemon holds it.
func LockDaemon(dir string) (*DaemonLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "daemon.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("already running")
	}
	return &DaemonLock{f: f}, nil
}

// DaemonRunning reports whether a daemon holds the lock of cluster dir.
func DaemonRunning(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "daemon.lock"), os.O_RDWR, 0o600)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// Teardown removes everything cluster `l` made: its processes (by cgroup), host-namespace
// mounts under its state directory, node namespaces, links, routes and the state directory.
// It works after a crash or `kill -9` of the daemon and is safe to run twice.
func Teardown(l Layout) error {
	var errs []error
	if cg, err := cgroup2Root(); err == nil {
		if err := (&Cgroup{Path: filepath.Join(cg, l.CgroupName())}).KillAndRemove(deadlineKill); err != nil {
			errs = append(errs, err)
		}
	}
	if err := UnmountUnder(l.Dir()); err != nil {
		errs = append(errs, err)
	}
	if err := TeardownUnderlay(l); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(l.Dir()); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", l.Dir(), err))
		}
	}
	return errors.Join(errs...)
}
