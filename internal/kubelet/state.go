package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// podState is what a restarted kubelet needs to clean up a pod sandbox it
// lost track of. It is written before each step that creates something.
type podState struct {
	Namespace     string         `json:"namespace"`
	Name          string         `json:"name"`
	UID           string         `json:"uid"`
	HolderPID     int            `json:"holderPID,omitempty"`
	HolderCmdline string         `json:"holderCmdline,omitempty"`
	CNI           *cniAttachment `json:"cni,omitempty"`
}

const stateFile = "state.json"

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

// procCmdline returns /proc/<pid>/cmdline, "" if the process is gone.
func procCmdline(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(b)
}

// cleanupLeftovers removes the pod sandboxes a previous run of this kubelet
// left behind: it detaches them from the network, kills their holder
// process (only if the PID still runs the command we started, so a reused
// PID is never hit), tears down their volumes and removes their state.
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
		if st.HolderPID > 0 && st.HolderCmdline != "" && procCmdline(st.HolderPID) == st.HolderCmdline {
			// Killing the holder ends the pod's PID namespace and with it
			// every container process.
			if err := syscall.Kill(st.HolderPID, syscall.SIGKILL); err != nil {
				log.Warn("kill leftover sandbox holder", "pid", st.HolderPID, "err", err)
			}
			waitGone(st.HolderPID, 5*time.Second)
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

func waitGone(pid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
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
