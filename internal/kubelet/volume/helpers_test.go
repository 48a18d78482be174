package volume

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

// env is one test's Manager on a temporary RootDir, with a fake API server.
type env struct {
	m      *Manager
	client *fake.Clientset
	clock  *clocktesting.FakeClock
	root   string
}

func newEnv(t *testing.T, objs ...runtime.Object) *env {
	t.Helper()
	client := fake.NewClientset(objs...)
	clk := clocktesting.NewFakeClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	root := t.TempDir()
	m, err := NewManager(Config{Client: client, RootDir: root, NodeName: "node-1", Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	return &env{m: m, client: client, clock: clk, root: m.cfg.RootDir}
}

// setUp runs SetUp and always tears the pod down after the test, so tmpfs
// mounts never outlive it.
func (e *env) setUp(t *testing.T, pod *corev1.Pod) (map[string][]Mount, error) {
	t.Helper()
	t.Cleanup(func() {
		if err := e.m.TearDown(pod.UID); err != nil {
			t.Errorf("cleanup TearDown: %v", err)
		}
	})
	return e.m.SetUp(context.Background(), pod)
}

func (e *env) mustSetUp(t *testing.T, pod *corev1.Pod) map[string][]Mount {
	t.Helper()
	mounts, err := e.setUp(t, pod)
	if err != nil {
		t.Fatalf("SetUp: %v", err)
	}
	return mounts
}

var podSeq int

// testPod is a pod with one container "app" mounting every volume at
// /mnt/<name>, plus the given volumes.
func testPod(vols ...corev1.Volume) *corev1.Pod {
	podSeq++
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "shop",
			UID:         types.UID(fmt.Sprintf("uid-%d", podSeq)),
			Labels:      map[string]string{"app": "web", "tier": "front"},
			Annotations: map[string]string{"owner": "team-a"},
		},
		Spec: corev1.PodSpec{
			NodeName:           "node-1",
			ServiceAccountName: "builder",
			Volumes:            vols,
			Containers:         []corev1.Container{{Name: "app"}},
		},
	}
	for _, v := range vols {
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: v.Name, MountPath: "/mnt/" + v.Name})
	}
	return pod
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Data: data}
}

func secretObj(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func fileMode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return fi.Mode().Perm()
}

// visibleFiles lists a volume's user-visible entries (not the ..data machinery).
func visibleFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read dir %s: %v", dir, err)
	}
	for _, e := range entries {
		if e.Name()[0] != '.' {
			out = append(out, e.Name())
		}
	}
	return out
}

func dataTarget(t *testing.T, dir string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatalf("readlink ..data: %v", err)
	}
	return target
}
