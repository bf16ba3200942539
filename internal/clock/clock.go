// Package clock is breakwater's one way to wait: for a duration, or until
// something wakes the waiter, or its context ends; on a clock that tests
// can replace, so that waits measured in seconds run at once.
package clock

import (
	"context"
	"time"
)

// Clock tells the time and makes timers. Real is the system's.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
	// NewTimerAt returns a timer that fires once the clock reaches t (at
	// once if it has). On a clock moved by hand a timer set for a time
	// cannot miss a move that falls between reading Now and setting a
	// timer for the difference, as NewTimer(t.Sub(Now())) can.
	NewTimerAt(t time.Time) Timer
}

// Timer is a stoppable one-shot timer, as time.Timer.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// Real is the system clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (realClock) NewTimerAt(t time.Time) Timer { return realTimer{time.NewTimer(time.Until(t))} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// Outcome is how a Wait ended.
type Outcome int

const (
	// Elapsed: the duration passed.
	Elapsed Outcome = iota
	// Woken: wake fired first.
	Woken
	// Done: the context ended first.
	Done
)

// Wait waits d on c, or until wake (nil: never) receives or is closed, or
// ctx ends, whichever comes first; d <= 0 has elapsed at once.
func Wait(ctx context.Context, c Clock, d time.Duration, wake <-chan struct{}) Outcome {
	if d <= 0 {
		return Elapsed
	}
	return wait(ctx, c.NewTimer(d), wake)
}

// Until is Wait until c reaches t rather than for a duration; t not after
// c's now has elapsed at once. A waiter whose deadline is a time (a slot)
// uses it, so that on a clock moved by hand it never wakes late.
func Until(ctx context.Context, c Clock, t time.Time, wake <-chan struct{}) Outcome {
	if !t.After(c.Now()) {
		return Elapsed
	}
	return wait(ctx, c.NewTimerAt(t), wake)
}

func wait(ctx context.Context, t Timer, wake <-chan struct{}) Outcome {
	defer t.Stop()
	select {
	case <-t.C():
		return Elapsed
	case <-wake:
		return Woken
	case <-ctx.Done():
		return Done
	}
}

// Sleep waits d on c; false means ctx ended first.
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	return Wait(ctx, c, d, nil) != Done
}
