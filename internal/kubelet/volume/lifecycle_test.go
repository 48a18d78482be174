package volume

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	certutil "k8s.io/client-go/util/cert"
)

func TestSubPath(t *testing.T) {
	e := newEnv(t, configMap("app-config", map[string]string{"app.ini": "port=80\n"}))
	outside := t.TempDir()
	pod := testPod(
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
	)
	c := &pod.Spec.Containers[0]
	c.Env = []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "scratch", MountPath: "/data", SubPath: "a/b"},
		{Name: "scratch", MountPath: "/logs", SubPathExpr: "logs/$(POD_NAME)"},
		{Name: "cfg", MountPath: "/etc/app.ini", SubPath: "app.ini"},
	}
	mounts := e.mustSetUp(t, pod)
	vol := filepath.Join(e.root, string(pod.UID), "volumes")

	if got, want := mounts["app"][0], (Mount{Source: filepath.Join(vol, "scratch", "a", "b"), Target: "/data"}); got != want {
		t.Errorf("subPath mount = %+v, want %+v", got, want)
	}
	if got, want := mounts["app"][1].Source, filepath.Join(vol, "scratch", "logs", "web-0"); got != want {
		t.Errorf("subPathExpr source = %s, want %s", got, want)
	}
	for _, m := range mounts["app"][:2] {
		if fi, err := os.Stat(m.Source); err != nil || !fi.IsDir() {
			t.Errorf("subPath %s was not created as a directory: %v", m.Source, err)
		}
	}
	cfg := mounts["app"][2]
	if !cfg.ReadOnly || readFile(t, cfg.Source) != "port=80\n" {
		t.Errorf("configMap subPath mount %+v: want read-only, content of app.ini", cfg)
	}

	// A symlink inside the volume pointing outside must not be followed.
	if err := os.Symlink(outside, filepath.Join(vol, "scratch", "escape")); err != nil {
		t.Fatal(err)
	}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/x", SubPath: "escape/new"}}
	_, err := e.m.SetUp(context.Background(), pod)
	if err == nil || !strings.Contains(err.Error(), "outside the volume") || !strings.Contains(err.Error(), `volume "scratch"`) {
		t.Errorf("SetUp with an escaping symlink: err = %v, want outside the volume", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Errorf("SetUp created a directory outside the volume")
	}
}

func TestRefreshConfigMap(t *testing.T) {
	cm := configMap("app-config", map[string]string{"mode": "prod", "old": "1"})
	e := newEnv(t, cm)
	pod := testPod(corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}})
	pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "cfg", MountPath: "/etc/mode", SubPath: "mode"})
	mounts := e.mustSetUp(t, pod)
	whole, sub := mounts["app"][0].Source, mounts["app"][1].Source
	ctx := context.Background()

	// No change: the ..data link stays put (nothing rewritten).
	before := dataTarget(t, whole)
	if err := e.m.Refresh(ctx, pod); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if after := dataTarget(t, whole); after != before {
		t.Errorf("Refresh without change swapped ..data from %s to %s", before, after)
	}

	cm = cm.DeepCopy()
	cm.Data = map[string]string{"mode": "staging", "new": "2"}
	if _, err := e.client.CoreV1().ConfigMaps("shop").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Refresh(ctx, pod); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	// The container's whole-volume mount source is the same directory; it sees the update.
	if got := readFile(t, filepath.Join(whole, "mode")); got != "staging" {
		t.Errorf("mode through the volume mount = %q, want staging", got)
	}
	if got := visibleFiles(t, whole); strings.Join(got, ",") != "mode,new" {
		t.Errorf("files after update = %v, want [mode new]", got)
	}
	// A subPath source stays a valid path after the old data is removed:
	// a bind made at container start keeps the old file (as upstream), a
	// container started now gets the current one.
	if got := readFile(t, sub); got != "staging" {
		t.Errorf("subPath source = %q, want staging", got)
	}
	if want := filepath.Join(whole, "mode"); sub != want {
		t.Errorf("subPath source = %s, want %s", sub, want)
	}

	// A failing refresh (object deleted, not optional) keeps the content.
	if err := e.client.CoreV1().ConfigMaps("shop").Delete(ctx, "app-config", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Refresh(ctx, pod); err == nil || !strings.Contains(err.Error(), `"cfg"`) {
		t.Errorf("Refresh after delete: err = %v, want one naming volume cfg", err)
	}
	if got := readFile(t, filepath.Join(whole, "mode")); got != "staging" {
		t.Errorf("mode after failed refresh = %q, want staging kept", got)
	}
}

// kubeAPIAccess is the volume the ServiceAccount admission plugin adds.
func kubeAPIAccess() corev1.Volume {
	return corev1.Volume{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr[int32](420),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr[int64](3607), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		},
	}}}
}

func TestServiceAccountToken(t *testing.T) {
	caPEM, _, err := certutil.GenerateSelfSignedCertKey("kube-apiserver", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, configMap("kube-root-ca.crt", map[string]string{"ca.crt": string(caPEM)}))
	var requests []*authenticationv1.TokenRequest
	var accounts []string
	e.client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		requests = append(requests, tr)
		accounts = append(accounts, ca.(k8stesting.CreateActionImpl).Name)
		tr.Status = authenticationv1.TokenRequestStatus{
			Token:               "token-" + string(rune('0'+len(requests))),
			ExpirationTimestamp: metav1.NewTime(e.clock.Now().Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second)),
		}
		return true, tr, nil
	})
	pod := testPod(kubeAPIAccess())
	pod.Spec.Containers[0].VolumeMounts[0].MountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	mounts := e.mustSetUp(t, pod)
	m := mounts["app"][0]
	if m.Target != "/var/run/secrets/kubernetes.io/serviceaccount" || !m.ReadOnly {
		t.Errorf("mount = %+v", m)
	}

	// What client-go's InClusterConfig reads: a token and a CA bundle it can load.
	if got := readFile(t, filepath.Join(m.Source, "token")); got != "token-1" {
		t.Errorf("token = %q, want token-1", got)
	}
	if _, err := certutil.NewPool(filepath.Join(m.Source, "ca.crt")); err != nil {
		t.Errorf("ca.crt is not a CA bundle InClusterConfig can load: %v", err)
	}
	if got := readFile(t, filepath.Join(m.Source, "namespace")); got != "shop" {
		t.Errorf("namespace = %q, want shop", got)
	}
	if got := fileMode(t, filepath.Join(m.Source, "token")); got != 0o644 {
		t.Errorf("token mode = %v, want 0644 (defaultMode 420)", got)
	}

	if len(requests) != 1 {
		t.Fatalf("%d token requests, want 1", len(requests))
	}
	spec := requests[0].Spec
	if accounts[0] != "builder" || len(spec.Audiences) != 0 || *spec.ExpirationSeconds != 3607 ||
		spec.BoundObjectRef == nil || spec.BoundObjectRef.Kind != "Pod" || spec.BoundObjectRef.Name != "web-0" || spec.BoundObjectRef.UID != pod.UID {
		t.Errorf("token request for %s = %+v (bound %+v), want account builder, API server audiences, 3607s, bound to the pod",
			accounts[0], spec, spec.BoundObjectRef)
	}

	ctx := context.Background()
	e.clock.Step(2880 * time.Second) // < 80% of 3607s
	if err := e.m.Refresh(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(requests) != 1 || readFile(t, filepath.Join(m.Source, "token")) != "token-1" {
		t.Errorf("token renewed before 80%% of its lifetime (%d requests)", len(requests))
	}
	e.clock.Step(10 * time.Second) // past 80%
	if err := e.m.Refresh(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(requests) != 2 || readFile(t, filepath.Join(m.Source, "token")) != "token-2" {
		t.Errorf("token not renewed after 80%% of its lifetime (%d requests)", len(requests))
	}
}

func TestTearDown(t *testing.T) {
	e := newEnv(t, secretObj("db", map[string]string{"user": "admin"}))
	pod := testPod(
		corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}}},
		corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
	)
	e.mustSetUp(t, pod)
	podDir := filepath.Join(e.root, string(pod.UID))
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(podDir)); len(ms) != 2 {
		t.Fatalf("%d mounts below the pod dir after SetUp, want 2 tmpfs", len(ms))
	}

	for i := range 2 {
		if err := e.m.TearDown(pod.UID); err != nil {
			t.Fatalf("TearDown #%d: %v", i+1, err)
		}
		if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(podDir)); len(ms) != 0 {
			t.Errorf("TearDown #%d left %d mounts", i+1, len(ms))
		}
		if _, err := os.Stat(podDir); !os.IsNotExist(err) {
			t.Errorf("TearDown #%d left %s: %v", i+1, podDir, err)
		}
	}
	// A late Refresh must not bring the pod's directory back.
	if err := e.m.Refresh(context.Background(), pod); err != nil {
		t.Errorf("Refresh after TearDown: %v", err)
	}
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("Refresh after TearDown recreated %s", podDir)
	}
}
