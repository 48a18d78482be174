package volume

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// fileWant is one expected file of a volume: content and permission bits.
type fileWant struct {
	content string
	mode    os.FileMode
}

func TestSetUpProjectedKinds(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("2Gi"),
		}},
	}
	objs := []runtime.Object{
		node,
		configMap("app-config", map[string]string{"app.ini": "port=80\n", "mode": "prod"}),
		secretObj("db", map[string]string{"password": "s3cret", "user": "admin"}),
	}
	tests := []struct {
		name    string
		vol     corev1.VolumeSource
		want    map[string]fileWant // path inside the volume
		visible []string            // top-level entries a container lists
		tmpfs   bool
	}{{
		name:    "configMap, all keys, default mode 0644",
		vol:     corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}},
		want:    map[string]fileWant{"app.ini": {"port=80\n", 0o644}, "mode": {"prod", 0o644}},
		visible: []string{"app.ini", "mode"},
	}, {
		name: "configMap items with path and mode",
		vol: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"},
			Items:                []corev1.KeyToPath{{Key: "app.ini", Path: "conf/app.ini", Mode: ptr[int32](0o400)}},
			DefaultMode:          ptr[int32](0o640),
		}},
		want:    map[string]fileWant{"conf/app.ini": {"port=80\n", 0o400}},
		visible: []string{"conf"},
	}, {
		name:    "secret, default mode 0644 on tmpfs",
		vol:     corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}},
		want:    map[string]fileWant{"password": {"s3cret", 0o644}, "user": {"admin", 0o644}},
		visible: []string{"password", "user"},
		tmpfs:   true,
	}, {
		name:    "secret defaultMode 0400",
		vol:     corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db", DefaultMode: ptr[int32](0o400)}},
		want:    map[string]fileWant{"password": {"s3cret", 0o400}},
		visible: []string{"password", "user"},
		tmpfs:   true,
	}, {
		name:    "optional configMap that does not exist gives an empty volume",
		vol:     corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr(true)}},
		visible: nil,
	}, {
		name: "optional secret skips a missing key",
		vol: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db", Optional: ptr(true),
			Items: []corev1.KeyToPath{{Key: "user", Path: "u"}, {Key: "absent", Path: "a"}}}},
		want:    map[string]fileWant{"u": {"admin", 0o644}},
		visible: []string{"u"},
		tmpfs:   true,
	}, {
		name: "downwardAPI fields and resources",
		vol: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}, Mode: ptr[int32](0o600)},
			{Path: "tier", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['tier']"}},
			{Path: "cpu_limit_millis", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.cpu", Divisor: resource.MustParse("1m")}},
			{Path: "mem_request_mi", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "requests.memory", Divisor: resource.MustParse("1Mi")}},
			{Path: "mem_limit", ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "app", Resource: "limits.memory"}},
		}}},
		want: map[string]fileWant{
			"name": {"web-0", 0o644}, "namespace": {"shop", 0o644},
			"labels": {"app=\"web\"\ntier=\"front\"", 0o644}, "annotations": {"owner=\"team-a\"", 0o600},
			"tier": {"front", 0o644}, "cpu_limit_millis": {"500", 0o644}, "mem_request_mi": {"64", 0o644},
			// No memory limit: the node's allocatable, as on a real kubelet.
			"mem_limit": {"2147483648", 0o644},
		},
		visible: []string{"annotations", "cpu_limit_millis", "labels", "mem_limit", "mem_request_mi", "name", "namespace", "tier"},
	}, {
		name: "projected configMap, secret and downwardAPI with defaultMode",
		vol: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptr[int32](0o440), Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Items: []corev1.KeyToPath{{Key: "mode", Path: "cfg/mode"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Items: []corev1.KeyToPath{{Key: "user", Path: "cred/user"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "uid", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}}}},
		}}},
		want:    map[string]fileWant{"cfg/mode": {"prod", 0o440}, "cred/user": {"admin", 0o440}},
		visible: []string{"cfg", "cred", "uid"},
		tmpfs:   true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, objs...)
			pod := testPod(corev1.Volume{Name: "vol", VolumeSource: tc.vol})
			pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			}
			mounts := e.mustSetUp(t, pod)

			dir := filepath.Join(e.root, string(pod.UID), "volumes", "vol")
			wantMount := []Mount{{Source: dir, Target: "/mnt/vol", ReadOnly: true}}
			if !slices.Equal(mounts["app"], wantMount) {
				t.Errorf("mounts = %+v, want %+v", mounts["app"], wantMount)
			}
			for p, w := range tc.want {
				if got := readFile(t, filepath.Join(dir, p)); got != w.content {
					t.Errorf("%s = %q, want %q", p, got, w.content)
				}
				if got := fileMode(t, filepath.Join(dir, p)); got != w.mode {
					t.Errorf("%s mode = %v, want %v", p, got, w.mode)
				}
			}
			if got := visibleFiles(t, dir); !slices.Equal(got, tc.visible) {
				t.Errorf("visible entries = %v, want %v", got, tc.visible)
			}
			if got := fsType(t, dir); (got == "tmpfs") != tc.tmpfs {
				t.Errorf("volume filesystem = %q, want tmpfs: %v", got, tc.tmpfs)
			}
		})
	}
}

// fsType is the type of the filesystem mounted exactly on dir ("" if none).
func fsType(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].FSType
}

func TestSetUpEmptyDirAndHostPath(t *testing.T) {
	e := newEnv(t)
	hostDir := filepath.Join(t.TempDir(), "data", "logs")
	pod := testPod(
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("8Mi"))}}},
		corev1.Volume{Name: "logs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: hostDir, Type: ptr(corev1.HostPathDirectoryOrCreate)}}},
	)
	pod.Spec.Containers[0].VolumeMounts[2].ReadOnly = true
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/work"}}}}
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debug", VolumeMounts: []corev1.VolumeMount{{Name: "logs", MountPath: "/logs"}}}}}

	mounts := e.mustSetUp(t, pod)

	volDir := func(n string) string { return filepath.Join(e.root, string(pod.UID), "volumes", n) }
	want := map[string][]Mount{
		"app": {
			{Source: volDir("scratch"), Target: "/mnt/scratch"},
			{Source: volDir("cache"), Target: "/mnt/cache"},
			{Source: hostDir, Target: "/mnt/logs", ReadOnly: true},
		},
		"init":  {{Source: volDir("scratch"), Target: "/work"}},
		"debug": {{Source: hostDir, Target: "/logs"}},
	}
	for c, w := range want {
		if !slices.Equal(mounts[c], w) {
			t.Errorf("mounts[%s] = %+v, want %+v", c, mounts[c], w)
		}
	}
	if len(mounts) != len(want) {
		t.Errorf("mounts for %d containers, want %d", len(mounts), len(want))
	}
	if got := fileMode(t, volDir("scratch")); got != 0o777 {
		t.Errorf("emptyDir mode = %v, want 0777", got)
	}
	if fi, err := os.Stat(hostDir); err != nil || !fi.IsDir() {
		t.Errorf("DirectoryOrCreate did not create %s: %v", hostDir, err)
	}
	if got := fsType(t, volDir("scratch")); got != "" {
		t.Errorf("disk emptyDir is a %s mount", got)
	}
	if got := fsType(t, volDir("cache")); got != "tmpfs" {
		t.Fatalf("Memory emptyDir filesystem = %q, want tmpfs", got)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(volDir("cache"), &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size != 8<<20 {
		t.Errorf("Memory emptyDir size = %d, want sizeLimit %d", size, 8<<20)
	}

	// A second SetUp (kubelet restart, retry) keeps data and mounts.
	if err := os.WriteFile(filepath.Join(volDir("cache"), "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	again := e.mustSetUp(t, pod)
	if !slices.Equal(again["app"], mounts["app"]) || readFile(t, filepath.Join(volDir("cache"), "keep")) != "x" {
		t.Errorf("second SetUp changed mounts or lost emptyDir data")
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.SingleEntryFilter(volDir("cache"))); len(ms) != 1 {
		t.Errorf("second SetUp stacked %d tmpfs mounts, want 1", len(ms))
	}
}

func TestSetUpErrors(t *testing.T) {
	objs := []runtime.Object{
		configMap("app-config", map[string]string{"mode": "prod"}),
		secretObj("db", map[string]string{"user": "admin"}),
	}
	regular := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmVol := func(name string, items ...corev1.KeyToPath) corev1.Volume {
		return corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Items: items}}}
	}
	emptyDir := corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	tests := []struct {
		name    string
		pod     func() *corev1.Pod
		wantErr []string
	}{
		{"missing configMap", func() *corev1.Pod { return testPod(cmVol("nope")) }, []string{`"cfg"`, "shop/nope", "optional"}},
		{"missing configMap key", func() *corev1.Pod { return testPod(cmVol("app-config", corev1.KeyToPath{Key: "port", Path: "p"})) },
			[]string{`"cfg"`, "port"}},
		{"missing secret", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "gone"}}})
		}, []string{`"sec"`, "shop/gone"}},
		{"persistentVolumeClaim unsupported", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}})
		}, []string{`"data"`, "persistentVolumeClaim volumes are not supported"}},
		{"csi unsupported", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d"}}})
		}, []string{"csi volumes are not supported"}},
		{"image unsupported", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "r"}}})
		}, []string{"image volumes are not supported"}},
		{"clusterTrustBundle unsupported", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Name: ptr("b"), Path: "b.pem"}}}}}})
		}, []string{`"p"`, "clusterTrustBundle is not supported"}},
		{"mount of an undefined volume", func() *corev1.Pod {
			p := testPod()
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "ghost", MountPath: "/g"}}
			return p
		}, []string{`container "app"`, `volume "ghost"`}},
		{"subPath with ..", func() *corev1.Pod {
			p := testPod(emptyDir)
			p.Spec.Containers[0].VolumeMounts[0].SubPath = "a/../../etc"
			return p
		}, []string{`container "app"`, `volume "scratch"`, "'..'"}},
		{"absolute subPath", func() *corev1.Pod {
			p := testPod(emptyDir)
			p.Spec.Containers[0].VolumeMounts[0].SubPath = "/etc"
			return p
		}, []string{`volume "scratch"`, "relative"}},
		{"subPathExpr with an unset variable", func() *corev1.Pod {
			p := testPod(emptyDir)
			p.Spec.Containers[0].VolumeMounts[0].SubPathExpr = "$(NOPE)"
			return p
		}, []string{`volume "scratch"`, "missing value for NOPE"}},
		{"hostPath Directory missing", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: filepath.Join(filepath.Dir(regular), "absent"), Type: ptr(corev1.HostPathDirectory)}}})
		}, []string{`"h"`, "does not exist"}},
		{"hostPath Directory is a file", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: regular, Type: ptr(corev1.HostPathDirectory)}}})
		}, []string{"is not a Directory", "a file"}},
		{"hostPath Socket is a file", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: regular, Type: ptr(corev1.HostPathSocket)}}})
		}, []string{"is not a Socket"}},
		{"hostPath FileOrCreate without parent", func() *corev1.Pod {
			return testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: filepath.Join(filepath.Dir(regular), "no", "f"), Type: ptr(corev1.HostPathFileOrCreate)}}})
		}, []string{"parent directory must exist"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, objs...)
			_, err := e.setUp(t, tc.pod())
			if err == nil {
				t.Fatalf("SetUp succeeded, want an error containing %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSetUpHostPathFileOrCreate(t *testing.T) {
	e := newEnv(t)
	p := filepath.Join(t.TempDir(), "app.lock")
	pod := testPod(corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
		Path: p, Type: ptr(corev1.HostPathFileOrCreate)}}})
	e.mustSetUp(t, pod)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("FileOrCreate did not create a file at %s: %v", p, err)
	}
}

func TestFSGroup(t *testing.T) {
	e := newEnv(t, secretObj("db", map[string]string{"user": "admin"}))
	pod := testPod(
		corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db", DefaultMode: ptr[int32](0o600)}}},
	)
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr[int64](2000)}
	e.mustSetUp(t, pod)
	dir := filepath.Join(e.root, string(pod.UID), "volumes")

	scratch, err := os.Stat(filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	if gid := scratch.Sys().(*syscall.Stat_t).Gid; gid != 2000 || scratch.Mode()&os.ModeSetgid == 0 {
		t.Errorf("emptyDir gid=%d mode=%v, want gid 2000 with setgid", gid, scratch.Mode())
	}
	user, err := os.Stat(filepath.Join(dir, "sec", "user"))
	if err != nil {
		t.Fatal(err)
	}
	if gid := user.Sys().(*syscall.Stat_t).Gid; gid != 2000 || user.Mode().Perm() != 0o640 {
		t.Errorf("secret file gid=%d mode=%v, want gid 2000 mode 0640", gid, user.Mode().Perm())
	}
}
