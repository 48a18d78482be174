package syncloop

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBurstIsCoalesced(t *testing.T) {
	l := New(Config{MinInterval: 50 * time.Millisecond, Resync: time.Hour, RetryMin: time.Millisecond, RetryMax: time.Second})
	var syncs atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.Run(ctx, func(context.Context, Reason) error { syncs.Add(1); return nil }, nil)
		close(done)
	}()
	time.Sleep(20 * time.Millisecond) // the first sync has run
	for range 100 {
		l.Mark()
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	if n := syncs.Load(); n < 2 || n > 3 {
		t.Errorf("first sync + a burst of 100 marks ran %d syncs, want 2 (3 at most)", n)
	}
}

func TestFailureIsRetriedWithBackoffAndReason(t *testing.T) {
	l := New(Config{MinInterval: time.Millisecond, Resync: time.Hour, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	var mu sync.Mutex
	var reasons []Reason
	var delays []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.Run(ctx, func(_ context.Context, why Reason) error {
			mu.Lock()
			defer mu.Unlock()
			reasons = append(reasons, why)
			if len(reasons) <= 3 {
				return errors.New("apply failed")
			}
			return nil
		}, func(_ error, in time.Duration) {
			mu.Lock()
			delays = append(delays, in)
			mu.Unlock()
		})
		close(done)
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	want := []Reason{Changed, Retry, Retry, Retry}
	if len(reasons) != len(want) {
		t.Fatalf("reasons = %v, want %v (3 failures, then success, then quiet)", reasons, want)
	}
	for i := range want {
		if reasons[i] != want[i] {
			t.Errorf("sync %d reason = %v, want %v", i, reasons[i], want[i])
		}
	}
	if len(delays) != 3 || delays[0] != 10*time.Millisecond || delays[1] != 20*time.Millisecond || delays[2] != 20*time.Millisecond {
		t.Errorf("retry delays = %v, want [10ms 20ms 20ms] (doubling, capped)", delays)
	}
}

func TestResyncRunsWithoutEvents(t *testing.T) {
	l := New(Config{MinInterval: time.Millisecond, Resync: 30 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: time.Second})
	var resyncs atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l.Run(ctx, func(_ context.Context, why Reason) error {
		if why == Resync {
			resyncs.Add(1)
		}
		return nil
	}, nil)
	if resyncs.Load() < 2 {
		t.Errorf("%d resyncs in 200ms with a 30ms period", resyncs.Load())
	}
}

// runLoop runs l until the test ends and returns the start time of every sync.
func runLoop(t *testing.T, l *Loop) func() []time.Time {
	t.Helper()
	var mu sync.Mutex
	var at []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		l.Run(ctx, func(context.Context, Reason) error {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return nil
		}, nil)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), at...)
	}
}

func TestMarkWithinSyncsByItsDeadline(t *testing.T) {
	l := New(Config{MinInterval: time.Millisecond, Resync: time.Hour, RetryMin: time.Millisecond, RetryMax: time.Second})
	syncs := runLoop(t, l)
	time.Sleep(20 * time.Millisecond) // the first sync has run
	t0 := time.Now()
	l.MarkWithin(100 * time.Millisecond)
	l.MarkWithin(300 * time.Millisecond) // a later deadline does not postpone the first
	time.Sleep(50 * time.Millisecond)
	if n := len(syncs()); n != 1 {
		t.Fatalf("%d syncs 50 ms into a 100 ms MarkWithin, want only the first", n)
	}
	time.Sleep(400 * time.Millisecond)
	got := syncs()
	if len(got) != 2 {
		t.Fatalf("%d syncs after two MarkWithin calls, want 2 (the first, and one for both)", len(got))
	}
	if d := got[1].Sub(t0); d < 100*time.Millisecond || d > 250*time.Millisecond {
		t.Errorf("MarkWithin(100ms) synced after %v", d)
	}
}

func TestMarkTakesPendingMarkWithin(t *testing.T) {
	l := New(Config{MinInterval: time.Millisecond, Resync: time.Hour, RetryMin: time.Millisecond, RetryMax: time.Second})
	syncs := runLoop(t, l)
	time.Sleep(20 * time.Millisecond)
	t0 := time.Now()
	l.MarkWithin(200 * time.Millisecond)
	time.Sleep(10 * time.Millisecond)
	l.Mark()
	time.Sleep(400 * time.Millisecond)
	got := syncs()
	if len(got) != 2 {
		t.Fatalf("%d syncs, want 2: the first, and one for the Mark that takes the MarkWithin with it", len(got))
	}
	if d := got[1].Sub(t0); d > 150*time.Millisecond {
		t.Errorf("the Mark's sync started %v after the MarkWithin; it should not wait for the deadline", d)
	}
}
