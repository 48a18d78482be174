package volume

import (
	"fmt"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// kind is a supported volume source.
type kind int

const (
	kindEmptyDir kind = iota
	kindHostPath
	kindConfigMap
	kindSecret
	kindDownwardAPI
	kindProjected
)

// projected reports whether the volume's files are computed from API
// objects and written by the AtomicWriter (and so refreshed and read-only).
func (k kind) projected() bool {
	return k == kindConfigMap || k == kindSecret || k == kindDownwardAPI || k == kindProjected
}

// inMemory reports whether the kubelet backs the volume with tmpfs because
// it may hold secrets.
func (k kind) inMemory() bool {
	return k == kindSecret || k == kindProjected
}

// volumeKind classifies a volume; any other source is an error naming its
// kind by its field name in the Pod spec (persistentVolumeClaim, csi, ...).
func volumeKind(v corev1.Volume) (kind, error) {
	s := v.VolumeSource
	switch {
	case s.EmptyDir != nil:
		return kindEmptyDir, nil
	case s.HostPath != nil:
		return kindHostPath, nil
	case s.ConfigMap != nil:
		return kindConfigMap, nil
	case s.Secret != nil:
		return kindSecret, nil
	case s.DownwardAPI != nil:
		return kindDownwardAPI, nil
	case s.Projected != nil:
		return kindProjected, nil
	}
	name := setSourceField(s)
	if name == "" {
		return 0, fmt.Errorf("volume %q has no volume source: set emptyDir, hostPath, configMap, secret, downwardAPI or projected", v.Name)
	}
	return 0, fmt.Errorf("volume %q: %s volumes are not supported by knet's kubelet; use emptyDir, hostPath, configMap, secret, downwardAPI or projected", v.Name, name)
}

// setSourceField returns the JSON name of the first non-nil field of a
// VolumeSource, so every kind present or future is named in errors.
func setSourceField(s corev1.VolumeSource) string {
	rv := reflect.ValueOf(s)
	for i := range rv.NumField() {
		f := rv.Field(i)
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			tag, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
			return tag
		}
	}
	return ""
}
