package kubelet

import (
	corev1 "k8s.io/api/core/v1"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestImageMapLookup(t *testing.T) {
	m := DefaultImages("/usr/bin/knet", "/opt/agnhost")
	m.Set("example.com/team", Image{Entrypoint: []string{"/team"}})
	m.Set("example.com/team/special", Image{Entrypoint: []string{"/special"}})
	tests := []struct {
		ref        string
		ok         bool
		entrypoint []string
		binary     string
	}{
		{"registry.k8s.io/e2e-test-images/agnhost:2.53", true, []string{"/agnhost"}, "/opt/agnhost"},
		{"registry.k8s.io/e2e-test-images/agnhost@sha256:abcd", true, []string{"/agnhost"}, "/opt/agnhost"},
		{"registry.k8s.io/pause:3.10", true, []string{"/knet", "pause"}, "/usr/bin/knet"},
		{"knet", true, []string{"/knet"}, "/usr/bin/knet"},
		{"ghcr.io/someone/knet:v1", true, []string{"/knet"}, "/usr/bin/knet"},
		{"localhost:5000/knet", true, []string{"/knet"}, "/usr/bin/knet"},
		{"example.com/team/app:1", true, []string{"/team"}, ""},
		{"example.com/team/special:1", true, []string{"/special"}, ""},
		{"example.com/teamx", false, nil, ""},
		{"busybox:1.36", false, nil, ""},
		{"registry.k8s.io/e2e-test-images/agnhostx:1", false, nil, ""},
	}
	for _, tc := range tests {
		img, ok := m.Lookup(tc.ref)
		if ok != tc.ok {
			t.Errorf("Lookup(%q) ok = %v, want %v", tc.ref, ok, tc.ok)
			continue
		}
		if !reflect.DeepEqual(img.Entrypoint, tc.entrypoint) || img.Binary != tc.binary {
			t.Errorf("Lookup(%q) = %+v, want entrypoint %v binary %q", tc.ref, img, tc.entrypoint, tc.binary)
		}
	}
}

func TestLoadImageMap(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "busybox")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "images.yaml")
	content := "- image: docker.io/library/busybox\n  binary: " + bin + "\n  entrypoint: [/busybox]\n  cmd: [sh]\n" +
		"- image: registry.k8s.io/pause\n  entrypoint: [/bin/sleep, infinity]\n"
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadImageMap(file, DefaultImages("/k", "/a"))
	if err != nil {
		t.Fatal(err)
	}
	img, ok := m.Lookup("docker.io/library/busybox:1.36")
	if !ok || img.Binary != bin || img.Path != "/busybox" || !reflect.DeepEqual(img.Cmd, []string{"sh"}) {
		t.Errorf("busybox = %+v, %v", img, ok)
	}
	// The file's entry replaces the default rule for the same image.
	img, _ = m.Lookup("registry.k8s.io/pause:3.10")
	if !reflect.DeepEqual(img.Entrypoint, []string{"/bin/sleep", "infinity"}) {
		t.Errorf("pause = %+v, want the file's entrypoint", img)
	}
	// Defaults the file does not mention stay.
	if _, ok := m.Lookup("registry.k8s.io/e2e-test-images/agnhost:2.53"); !ok {
		t.Error("agnhost mapping lost")
	}

	for name, bad := range map[string]string{
		"unknown field":  "- image: x\n  entrypont: [/x]\n",
		"missing binary": "- image: x\n  binary: " + filepath.Join(dir, "nope") + "\n",
		"no image":       "- entrypoint: [/x]\n",
		"relative path":  "- image: x\n  path: x\n",
	} {
		f := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadImageMap(f, ImageMap{}); err == nil {
			t.Errorf("%s: LoadImageMap accepted %q", name, bad)
		}
	}
}

func TestDefaultImagesMountAgnhostFiles(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agnhost")
	if err := os.MkdirAll(filepath.Join(dir, "agnhost-files"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"agnhost", "agnhost-files/localhost.crt", "agnhost-files/localhost.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, ok := DefaultImages("/knet", bin).Lookup("registry.k8s.io/e2e-test-images/agnhost:2.56")
	if !ok {
		t.Fatal("agnhost not mapped")
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		if got := img.Files[filepath.Join(dir, "agnhost-files", f)]; got != "/"+f {
			t.Errorf("%s mounted at %q, want /%s (agnhost porter serves TLS with it)", f, got, f)
		}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.56"}}}}
	if got := len(imageMounts(pod, DefaultImages("/knet", bin))); got != 3 {
		t.Errorf("imageMounts = %d mounts, want the binary and its 2 files", got)
	}
}

func TestDefaultImagesMountLeanDNSBesideKnet(t *testing.T) {
	dir := t.TempDir()
	knet, lean := filepath.Join(dir, "knet"), filepath.Join(dir, "knet-dns")
	if img, _ := DefaultImages(knet, "").Lookup("knet"); len(img.Files) != 0 {
		t.Errorf("without knet-dns beside knet the image has files %v", img.Files)
	}
	for _, f := range []string{knet, lean} {
		if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img, ok := DefaultImages(knet, "").Lookup("knet:v1")
	if !ok {
		t.Fatal("knet not mapped")
	}
	if got := img.Files[lean]; got != "/knet-dns" {
		t.Errorf("knet-dns mounted at %q, want /knet-dns (knet dns execs the file beside /knet)", got)
	}
}
