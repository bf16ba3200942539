package ratelimit

import (
	"sync"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// Bucket is a Quota's TokenSource in this process: a token bucket whose
// level may go below zero (tokens promised to waiters), reckoned at a time
// that never goes backwards. Use NewBucket.
//
// Why not golang.org/x/time/rate, as the Limiter's buckets could be: a
// Quota must give a token back without holding its Reservation (Refund),
// and must grant tokens no earlier than a pause's end. rate.Limiter can do
// neither: a reservation made "at" a future time and one made now would
// count the time between twice.
type Bucket struct {
	perSec float64 // 0: no limit
	burst  float64

	mu     sync.Mutex
	tokens float64
	last   time.Time // when tokens was computed; never goes backwards
}

// NewBucket returns a full bucket of cfg's rate and burst (at least 1). A
// zero rate grants every token at once.
func NewBucket(cfg config.Quota) *Bucket {
	b := &Bucket{perSec: cfg.Rate.PerSecond(), burst: float64(max(cfg.Burst, 1))}
	b.tokens = b.burst
	return b
}

// Take is TokenSource's.
func (b *Bucket) Take(now, at, limit time.Time) (time.Time, error) {
	if b.perSec <= 0 {
		if tooLate(now, at, limit) {
			return time.Time{}, &ExhaustedError{RetryAfter: at.Sub(now), Paused: at.After(now)}
		}
		return at, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance(at)
	due := later(at, b.last)
	b.tokens--
	if b.tokens < 0 {
		due = due.Add(time.Duration(-b.tokens / b.perSec * float64(time.Second)))
	}
	if tooLate(now, due, limit) {
		b.tokens++ // nothing else happened under the lock: an exact undo
		return time.Time{}, &ExhaustedError{RetryAfter: max(due.Sub(now), 0), Paused: at.After(now)}
	}
	return due, nil
}

// Refund is TokenSource's: the bucket never holds more than burst tokens.
func (b *Bucket) Refund() {
	if b.perSec <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+1, b.burst)
}

// Pause is TokenSource's: the Quota keeps this process's pause, and a
// bucket here shares it with nobody.
func (b *Bucket) Pause(_ time.Time, d time.Duration) time.Duration { return d }

// Level is TokenSource's.
func (b *Bucket) Level(now time.Time) (tokens float64, paused time.Duration) {
	if b.perSec <= 0 {
		return b.burst, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	tokens = b.tokens
	if !b.last.IsZero() && now.After(b.last) {
		tokens = min(tokens+now.Sub(b.last).Seconds()*b.perSec, b.burst)
	}
	return tokens, 0
}

// tooLate reports whether a token due is past limit (zero: none); one
// free now never is, however early limit is.
func tooLate(now, due, limit time.Time) bool {
	return !limit.IsZero() && due.After(limit) && due.After(now)
}

// advance adds the tokens earned between b.last and at. b.mu is held.
func (b *Bucket) advance(at time.Time) {
	if !b.last.IsZero() && at.After(b.last) {
		b.tokens = min(b.tokens+at.Sub(b.last).Seconds()*b.perSec, b.burst)
	}
	if at.After(b.last) {
		b.last = at
	}
}
