package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// podState is what a restarted kubelet needs to clean up a pod sandbox it
// lost track of. It is written before each step that creates something.
type podState struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	UID       string         `json:"uid"`
	Holder    *processID     `json:"holder,omitempty"`
	CNI       *cniAttachment `json:"cni,omitempty"`
	// Containers are the running container processes by container name.
	Containers map[string]processID `json:"containers,omitempty"`
}

// processID identifies a process across PID reuse: the PID and the time
// (in clock ticks since boot) the kernel started it.
type processID struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

func newProcessID(pid int) *processID {
	st, ok := procStartTime(pid)
	if !ok {
		return nil
	}
	return &processID{PID: pid, StartTime: st}
}

// alive reports whether the process still is the one recorded.
func (p processID) alive() bool {
	st, ok := procStartTime(p.PID)
	return ok && st == p.StartTime
}

// procStartTime reads field 22 of /proc/<pid>/stat.
func procStartTime(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may contain spaces; fields resume after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	return v, err == nil
}

const stateFile = "state.json"

// updateState changes the pod's state file under the worker's lock.
func (w *podWorker) updateState(change func(*podState)) error {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	change(&w.state)
	return w.saveState(w.state)
}

func (w *podWorker) saveState(st podState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(w.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write pod state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, stateFile)); err != nil {
		return fmt.Errorf("write pod state: %w", err)
	}
	return nil
}

// cleanupLeftovers removes the pod sandboxes a previous run of this kubelet
// left behind: it detaches them from the network, kills their container
// and holder processes (only if the PID still is the process we started,
// by its start time, so a reused PID is never hit), tears down their
// volumes and removes their state.
// Virtual-kubelet then creates the node's pods again.
func (k *Kubelet) cleanupLeftovers(ctx context.Context) {
	entries, err := os.ReadDir(k.cfg.podsDir())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			k.log.Warn("list leftover pods", "err", err)
		}
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(k.cfg.podsDir(), e.Name())
		var st podState
		if data, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
			if err := json.Unmarshal(data, &st); err != nil {
				k.log.Warn("leftover pod state unreadable", "dir", dir, "err", err)
			}
		}
		log := k.log.With("pod", st.Namespace+"/"+st.Name, "uid", e.Name())
		if st.CNI != nil {
			if err := k.net.Teardown(ctx, *st.CNI); err != nil {
				log.Warn("CNI DEL of leftover pod", "err", err)
			}
		}
		procs := make([]processID, 0, len(st.Containers)+1)
		for _, p := range st.Containers {
			procs = append(procs, p)
		}
		if st.Holder != nil {
			procs = append(procs, *st.Holder) // last: it holds the namespaces
		}
		for _, p := range procs {
			if !p.alive() {
				continue
			}
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
				log.Warn("kill leftover pod process", "pid", p.PID, "err", err)
			}
			waitGone(p, 5*time.Second)
		}
		if err := k.volumes.TearDown(types.UID(e.Name())); err != nil {
			log.Warn("tear down leftover volumes", "err", err)
		}
		if err := removeUnmounted(dir); err != nil {
			log.Warn("remove leftover pod directory", "err", err)
			continue
		}
		log.Info("cleaned up leftover pod sandbox")
	}
}

func waitGone(p processID, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeUnmounted removes dir unless something is still mounted below it:
// RemoveAll would otherwise delete through a bind mount into its source.
func removeUnmounted(dir string) error {
	mounts, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("%s still has mounts (%s); unmount them, then remove the directory", dir, strings.Join(mounts, ", "))
	}
	return os.RemoveAll(dir)
}

func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, s.Err()
}

// unescapeMount decodes the octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
