package kubelet

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestContainerArgv(t *testing.T) {
	agnhost := Image{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}
	env := map[string]string{"PORT": "8080"}
	tests := []struct {
		name    string
		c       corev1.Container
		img     Image
		mapped  bool
		want    []string
		noCmdOK bool
	}{
		{"image defaults", corev1.Container{}, agnhost, true, []string{"/agnhost", "pause"}, false},
		{"args replace cmd", corev1.Container{Args: []string{"netexec", "--http-port=$(PORT)"}}, agnhost, true,
			[]string{"/agnhost", "netexec", "--http-port=8080"}, false},
		{"command drops cmd", corev1.Container{Command: []string{"/bin/sh", "-c", "echo $(PORT)"}}, agnhost, true,
			[]string{"/bin/sh", "-c", "echo 8080"}, false},
		{"command and args", corev1.Container{Command: []string{"/bin/echo"}, Args: []string{"a", "$$(PORT)"}}, agnhost, true,
			[]string{"/bin/echo", "a", "$(PORT)"}, false},
		{"unmapped with command", corev1.Container{Image: "busybox", Command: []string{"sleep", "1"}}, Image{}, false,
			[]string{"sleep", "1"}, false},
		{"unmapped without command", corev1.Container{Image: "busybox"}, Image{}, false, nil, true},
		{"unmapped args only", corev1.Container{Image: "busybox", Args: []string{"x"}}, Image{}, false, nil, true},
		{"mapped but empty", corev1.Container{Image: "empty"}, Image{}, true, nil, true},
		{"unknown var kept", corev1.Container{Command: []string{"echo", "$(NOPE)"}}, Image{}, false, []string{"echo", "$(NOPE)"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := containerArgv(&tc.c, tc.img, tc.mapped, env)
			if tc.noCmdOK {
				var e errNoCommand
				if !errors.As(err, &e) || !strings.Contains(err.Error(), "--image-map") {
					t.Fatalf("err = %v, want errNoCommand telling about --image-map", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("argv = %q, want %q", got, tc.want)
			}
		})
	}
}
