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
