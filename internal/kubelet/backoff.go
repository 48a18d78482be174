package kubelet

import "time"

// Restart back-off, as the kubelet does it: the first restart is immediate,
// later ones wait 10s, doubling up to 5m; a container that ran for 10
// minutes starts over.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// restartBackoff tracks consecutive failed runs of one container.
type restartBackoff struct {
	failures int
}

// next records a run that lasted ranFor and returns how long to wait before
// starting the container again.
func (b *restartBackoff) next(ranFor time.Duration) time.Duration {
	if ranFor >= backoffReset {
		b.failures = 0
	}
	b.failures++
	if b.failures == 1 {
		return 0
	}
	d := backoffInitial
	for i := 2; i < b.failures && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// shouldRestart applies the pod's restartPolicy (or a sidecar init
// container's own restartPolicy) to a container that exited.
func shouldRestart(policy string, exitCode int32) bool {
	switch policy {
	case "Always":
		return true
	case "OnFailure":
		return exitCode != 0
	default:
		return false
	}
}
