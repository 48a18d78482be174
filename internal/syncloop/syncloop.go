// Package syncloop runs a controller's sync the way knet's controllers share: informer events
// only mark work dirty; syncs run at least MinInterval apart, so a burst of events becomes one
// sync; a change marked with MarkWithin may wait a little for a related one; a failed sync is
// retried with exponential backoff; and a periodic resync runs even without events. It owns no
// state of the controller and touches nothing but its timers.
package syncloop

import (
	"context"
	"sync"
	"time"
)

// Config bounds the loop. Every field must be positive.
type Config struct {
	MinInterval time.Duration // minimum time between two syncs
	Resync      time.Duration // a sync runs at least this often
	RetryMin    time.Duration // first retry delay after a failure
	RetryMax    time.Duration // cap of the doubling retry delay
}

// Reason says why a sync runs, so a controller can rebuild fully where it needs to.
type Reason int

const (
	// Changed: the first sync, or something was marked dirty.
	Changed Reason = iota
	// Resync: the periodic resync.
	Resync
	// Retry: the previous sync failed.
	Retry
)

// Loop coalesces Mark and MarkWithin calls into syncs.
type Loop struct {
	cfg   Config
	dirty chan struct{}
	wake  chan struct{} // MarkWithin moved the deadline

	mu     sync.Mutex
	lazyAt time.Time // the earliest deadline of pending MarkWithin calls; zero if none
}

// New returns a loop; call Mark from informer handlers and Run once.
func New(cfg Config) *Loop {
	return &Loop{cfg: cfg, dirty: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
}

// Mark asks for a sync. It never blocks.
func (l *Loop) Mark() {
	select {
	case l.dirty <- struct{}{}:
	default:
	}
}

// MarkWithin asks for a sync no later than d from now, for a change that is worth little on its
// own and usually comes with a related one: any sync that starts before then (after a Mark, say)
// takes the change with it, so the pair costs one sync. It never blocks.
func (l *Loop) MarkWithin(d time.Duration) {
	at := time.Now().Add(d)
	l.mu.Lock()
	if !l.lazyAt.IsZero() && !at.Before(l.lazyAt) {
		l.mu.Unlock()
		return
	}
	l.lazyAt = at
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run calls sync until ctx ends: once at once, then after each Mark, periodic resync or retry.
// onError, if set, is told of each failure and the delay until the retry. Run returns when ctx
// ends; a sync error never ends it.
func (l *Loop) Run(ctx context.Context, sync func(ctx context.Context, why Reason) error, onError func(err error, retryIn time.Duration)) {
	var last time.Time
	retry := time.NewTimer(0) // the first sync runs at once
	defer retry.Stop()
	resync := time.NewTicker(l.cfg.Resync)
	defer resync.Stop()
	lazy := time.NewTimer(time.Hour) // fires at lazyAt
	lazy.Stop()
	defer lazy.Stop()
	backoff := time.Duration(0)
	for {
		why := Changed
		select {
		case <-ctx.Done():
			return
		case <-l.dirty:
		case <-retry.C:
			if backoff > 0 {
				why = Retry
			}
		case <-resync.C:
			why = Resync
		case <-l.wake:
			l.mu.Lock()
			at := l.lazyAt
			l.mu.Unlock()
			if !at.IsZero() {
				lazy.Reset(time.Until(at))
			}
			continue
		case <-lazy.C:
		}
		// Coalesce bursts: wait out the minimum interval, then take every change that
		// arrived meanwhile in this one sync.
		if wait := time.Until(last.Add(l.cfg.MinInterval)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-l.dirty:
		default:
		}
		// This sync reads every change marked so far, lazy ones included.
		l.mu.Lock()
		l.lazyAt = time.Time{}
		l.mu.Unlock()
		lazy.Stop()
		last = time.Now()
		err := sync(ctx, why)
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, l.cfg.RetryMin), l.cfg.RetryMax)
		if onError != nil {
			onError(err, backoff)
		}
		retry.Reset(backoff)
	}
}
