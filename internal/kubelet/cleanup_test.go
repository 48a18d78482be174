package kubelet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// A restarted kubelet finds the sandbox of a pod it lost track of: it
// detaches the network, kills the recorded processes and removes the state.
func TestCleanupLeftovers(t *testing.T) {
	tk := newTestKubelet(t)
	pod := newTestPod("orphan")
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "while true; do sleep 0.1; done"}}}
	tk.run(t, pod)
	tk.waitFor(t, pod, "Running", 20*time.Second, func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	w := tk.worker(pod.Namespace, pod.Name)
	data, err := os.ReadFile(filepath.Join(w.dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st podState
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Holder == nil || !st.Holder.alive() || st.CNI == nil || len(st.Containers) != 1 {
		t.Fatalf("state file = %s", data)
	}
	container := st.Containers["c"]
	if !container.alive() {
		t.Fatalf("recorded container process %d is not running", container.PID)
	}

	// A second kubelet on the same state directory: what a restart sees.
	k2 := newKubelet(tk.cfg, tk.rt, tk.net, noVolumes{})
	k2.cleanupLeftovers(context.Background())
	if container.alive() || st.Holder.alive() {
		t.Errorf("leftover processes still run: container %v, holder %v", container.alive(), st.Holder.alive())
	}
	if tk.net.attachments() != 0 {
		t.Error("leftover pod still attached to the network")
	}
	if _, err := os.Stat(w.dir); !os.IsNotExist(err) {
		t.Errorf("leftover pod directory still exists: %v", err)
	}
}

func TestProcessIDSurvivesOnlyItsProcess(t *testing.T) {
	self := newProcessID(os.Getpid())
	if self == nil || !self.alive() {
		t.Fatal("own process not alive")
	}
	reused := *self
	reused.StartTime++
	if reused.alive() {
		t.Error("a PID with another start time counted as our process")
	}
	if (processID{PID: 1 << 30}).alive() {
		t.Error("a PID that does not exist counted as alive")
	}
}
