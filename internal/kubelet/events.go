package kubelet

import (
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
)

// quietRecorder is the recorder handed to virtual-kubelet: it drops the
// Normal "Provider*Success" events virtual-kubelet emits on every pod sync,
// which a real kubelet does not, and passes everything else (including its
// failure events) through.
type quietRecorder struct{ record.EventRecorder }

func noisy(eventtype, reason string) bool {
	return eventtype == "Normal" && strings.HasPrefix(reason, "Provider") && strings.HasSuffix(reason, "Success")
}

func (r quietRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	if !noisy(eventtype, reason) {
		r.EventRecorder.Event(obj, eventtype, reason, message)
	}
}

func (r quietRecorder) Eventf(obj runtime.Object, eventtype, reason, format string, args ...any) {
	if !noisy(eventtype, reason) {
		r.EventRecorder.Eventf(obj, eventtype, reason, format, args...)
	}
}

func (r quietRecorder) AnnotatedEventf(obj runtime.Object, annotations map[string]string, eventtype, reason, format string, args ...any) {
	if !noisy(eventtype, reason) {
		r.EventRecorder.AnnotatedEventf(obj, annotations, eventtype, reason, format, args...)
	}
}
