package kubelet

import (
	"testing"
	"time"
)

func TestRestartBackoff(t *testing.T) {
	var b restartBackoff
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i, w := range want {
		if got := b.next(time.Second); got != w {
			t.Errorf("restart %d: back-off %s, want %s", i+1, got, w)
		}
	}
	// A run of 10 minutes resets the back-off.
	if got := b.next(10 * time.Minute); got != 0 {
		t.Errorf("after a long run: back-off %s, want 0", got)
	}
	if got := b.next(time.Second); got != 10*time.Second {
		t.Errorf("second crash after reset: back-off %s, want 10s", got)
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tc := range []struct {
		policy string
		code   int32
		want   bool
	}{
		{"Always", 0, true}, {"Always", 1, true},
		{"OnFailure", 0, false}, {"OnFailure", 2, true},
		{"Never", 0, false}, {"Never", 1, false},
	} {
		if got := shouldRestart(tc.policy, tc.code); got != tc.want {
			t.Errorf("shouldRestart(%s, %d) = %v, want %v", tc.policy, tc.code, got, tc.want)
		}
	}
}
