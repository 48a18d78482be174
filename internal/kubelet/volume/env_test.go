package volume

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestSubPathExprEnvironment(t *testing.T) {
	optional := true
	tests := []struct {
		name    string
		env     []corev1.EnvVar
		expr    string
		hook    func(context.Context, *corev1.Pod, *corev1.Container) (map[string]string, error)
		want    string // subPath below the volume
		wantErr string
	}{
		{name: "value referring to an earlier variable", expr: "$(DIR)",
			env:  []corev1.EnvVar{{Name: "BASE", Value: "logs"}, {Name: "DIR", Value: "$(BASE)/app"}},
			want: "logs/app"},
		{name: "fieldRef and configMapKeyRef", expr: "$(NS)/$(MODE)",
			env: []corev1.EnvVar{
				{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "mode"}}},
			},
			want: "shop/prod"},
		{name: "secretKeyRef and spec.nodeName", expr: "$(NODE)-$(USER)",
			env: []corev1.EnvVar{
				{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
				{Name: "USER", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "user"}}},
			},
			want: "node-1-admin"},
		{name: "optional missing key expands to empty, which subPathExpr refuses", expr: "$(X)",
			env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "absent", Optional: &optional}}}},
			wantErr: "missing value for X"},
		{name: "missing configMap key names it", expr: "$(X)",
			env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "absent"}}}},
			wantErr: `has no key "absent"`},
		{name: "Config.ContainerEnv replaces the fallback", expr: "$(FROM_KUBELET)",
			env: []corev1.EnvVar{{Name: "FROM_KUBELET", Value: "ignored"}},
			hook: func(context.Context, *corev1.Pod, *corev1.Container) (map[string]string, error) {
				return map[string]string{"FROM_KUBELET": "svc-env"}, nil
			},
			want: "svc-env"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, configMap("app-config", map[string]string{"mode": "prod"}), secretObj("db", map[string]string{"user": "admin"}))
			e.m.cfg.ContainerEnv = tc.hook
			pod := testPod(corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			pod.Spec.Containers[0].Env = tc.env
			pod.Spec.Containers[0].VolumeMounts[0].SubPathExpr = tc.expr
			mounts, err := e.setUp(t, pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetUp: %v", err)
			}
			want := filepath.Join(e.root, string(pod.UID), "volumes", "scratch", tc.want)
			if got := mounts["app"][0].Source; got != want {
				t.Errorf("source = %s, want %s", got, want)
			}
		})
	}
}
