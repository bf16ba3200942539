package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// Quota is an upstream's own limit: one per upstream, shared by every route
// to it, and spent by every attempt actually sent (first tries, retries,
// hedges, probes). It is a token bucket whose waiters queue by priority,
// then arrival, plus a pause that the upstream can impose with Retry-After.
// Callers that waited are let go at least one token interval apart in
// real time, even when a timer fires late (see release), so that a quota
// set to an upstream's own per-second limit keeps within it.
// The zero value is not usable; call NewQuota.
//
// Why not golang.org/x/time/rate here, as Limiter does: a Quota must give a
// token back without holding its Reservation (Refund), and must grant tokens
// no earlier than a pause's end. rate.Limiter can do neither: a reservation
// made "at" a future time and one made now would count the time between
// twice. The bucket below is the same arithmetic, evaluated at a time that
// never goes backwards.
type Quota struct {
	perSec   float64 // tokens per second; 0 means no limit, only pauses
	burst    float64
	maxWait  time.Duration
	honor    bool
	maxPause time.Duration
	rate     string
	now      func() time.Time

	mu          sync.Mutex
	tokens      float64   // may be negative: tokens promised to waiters
	last        time.Time // when tokens was computed; never goes backwards
	pausedUntil time.Time
	pauseCh     chan struct{} // closed, and replaced, when a pause is extended
	lastSlept   time.Time     // when the last caller that slept for its token was let go
	// waiters sleep for their tokens, in the order they are served: by
	// priority, then arrival. Their grant times (slots) are the bucket's
	// promises and ascend along the slice; a higher-priority arrival takes
	// the slot of the first lower-priority waiter, which moves one slot
	// down, and so on (see queue).
	waiters []*quotaWaiter

	onWaiting func(prio, delta int)           // nil: not reported
	onWaited  func(prio int, d time.Duration) // nil: not reported

	waiting   atomic.Int64
	exhausted atomic.Uint64
}

// quotaWaiter is one caller sleeping for its token.
type quotaWaiter struct {
	prio     int
	grantAt  time.Time // its slot: moved by arrivals ahead of it and by leavers
	deadline time.Time // the latest slot it can use (start + its budget)
	shed     *ExhaustedError
	moved    chan struct{} // buffered 1: grantAt or shed changed
}

// ExhaustedError is returned by Quota.Wait when no token can be had within
// the wait allowed; nothing was spent.
type ExhaustedError struct {
	// RetryAfter is the time until a token would have been granted. Whoever
	// prints it rounds it up to whole seconds (RetryAfterSeconds).
	RetryAfter time.Duration
	// Paused is true when the upstream's own Retry-After pause was in force.
	Paused bool
}

func (e *ExhaustedError) Error() string {
	if e.Paused {
		return fmt.Sprintf("upstream asked to slow down: paused, retry in %ds", RetryAfterSeconds(e.RetryAfter))
	}
	return fmt.Sprintf("upstream quota exhausted: retry in %ds", RetryAfterSeconds(e.RetryAfter))
}

// QuotaSnapshot is a Quota's state, for the admin API and the dashboard.
type QuotaSnapshot struct {
	// Tokens available now; 0 while callers wait for theirs.
	Tokens float64
	Burst  int
	// Rate as configured ("100/1m"); "" when the quota has no rate.
	Rate string
	// PausedFor is what remains of an upstream-imposed pause; 0 when none.
	PausedFor time.Duration
	// Waiting is how many callers are sleeping for a token now.
	Waiting int
	// Exhausted counts the Waits that failed with *ExhaustedError.
	Exhausted uint64
}

// NewQuota returns a Quota for cfg. Its bucket starts full. A zero rate
// means no token limit (only pauses apply); burst < 1 means 1; max_wait <= 0
// means never wait: a token must be free at once. With honor_retry_after,
// Pause is capped at max_pause, and max_pause <= 0 means no pause at all.
// Only WithClock applies.
func NewQuota(cfg config.Quota, opts ...Option) *Quota {
	o := buildOptions(opts)
	q := &Quota{
		perSec:    cfg.Rate.PerSecond(),
		burst:     float64(max(cfg.Burst, 1)),
		maxWait:   max(cfg.MaxWait.D(), 0),
		honor:     cfg.HonorRetryAfter,
		maxPause:  cfg.MaxPause.D(),
		rate:      cfg.Rate.String(),
		now:       o.clock,
		pauseCh:   make(chan struct{}),
		onWaiting: o.queueWaiting,
		onWaited:  o.queueWaited,
	}
	q.tokens = q.burst
	q.last = q.now()
	return q
}

// Wait is WaitPriority at priority 0.
func (q *Quota) Wait(ctx context.Context) (waited time.Duration, err error) {
	return q.WaitPriority(ctx, 0)
}

// WaitPriority blocks until a token is granted, and reports how long it
// waited. It never waits longer than max_wait, nor past ctx's deadline:
// when the token would come later than that, it fails at once — rather
// than queue in vain — with *ExhaustedError, and nothing is spent.
// Waiters are served by priority (higher first), then arrival: an
// arrival goes ahead of every waiter of a lower priority, each of which
// moves one slot later, and one that no longer fits its own wait is
// turned away at once with *ExhaustedError (shed). While the upstream is
// paused (Pause) no token is granted before the pause ends; a pause that
// begins or grows while a caller waits is honoured too, and fails it with
// Paused set if it no longer fits. If ctx is done while waiting, the
// reserved token is given back and ctx.Err() returned.
func (q *Quota) WaitPriority(ctx context.Context, prio int) (waited time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := q.now()
	budget := q.maxWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, dl.Sub(start))
	}
	slept := false
	defer func() {
		if slept && q.onWaited != nil {
			q.onWaited(prio, q.now().Sub(start))
		}
	}()
	for {
		now, w, pauseCh, err := q.reserve(start, budget, prio)
		if err != nil {
			return 0, err
		}
		if w == nil {
			if !slept {
				return 0, nil // granted at once: no wait to report
			}
			return max(now.Sub(start), 0), nil
		}
		slept = true
		retry, err := q.sleep(ctx, w, pauseCh)
		if err != nil {
			return q.now().Sub(start), err
		}
		if !retry {
			now, paceAt, pauseCh := q.release()
			if !paceAt.After(now) {
				return max(now.Sub(start), 0), nil
			}
			if retry, err = q.sleepUntil(ctx, paceAt.Sub(now), paceAt, pauseCh); err != nil {
				return q.now().Sub(start), err
			}
			if !retry {
				return max(q.now().Sub(start), 0), nil
			}
		}
		// A pause now ends after our grant: the token we hold was given back;
		// queue again behind the pause, within what is left of the budget.
	}
}

// release lets go a caller that slept until its token's time, no sooner
// than one token interval after the previous such caller; if that is
// later than now it returns when (the caller sleeps until then, and the
// time is taken as its release).
//
// Why: grant times are computed in advance, at the rate, so a sleeper that
// wakes late — timers on a busy machine do, by 15ms and more — would be
// followed on schedule by the next ones, and N+1 requests of a burst-1
// quota of N per period could reach the upstream within one period, which
// an upstream counting a sliding window refuses with 429. Held back
// instead, the lateness is passed down the queue rather than made up: what
// is sent never runs faster than the rate, only now and then a hair slower.
func (q *Quota) release() (now, paceAt time.Time, pauseCh <-chan struct{}) {
	now = q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.perSec <= 0 {
		return now, now, nil
	}
	if next := q.lastSlept.Add(q.durationFor(1)); now.Before(next) {
		q.lastSlept = next // claimed: the next sleeper queues behind it
		return now, next, q.pauseCh
	}
	q.lastSlept = now
	return now, now, nil
}

// reserve takes a token and says when it may be used: now (w nil), or at
// the slot of the waiter w it queued (at priority prio); or, if that is
// later than start+budget, takes nothing and returns *ExhaustedError.
func (q *Quota) reserve(start time.Time, budget time.Duration, prio int) (now time.Time, w *quotaWaiter, pauseCh <-chan struct{}, err error) {
	now = q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	// Tokens are reckoned at a time that never goes backwards and is never
	// inside a pause: during one, every reservation is made as of its end,
	// so the waiters it releases are spread at the rate, not let go at once.
	at := now
	if q.pausedUntil.After(at) {
		at = q.pausedUntil
	}
	grantAt := at
	if q.perSec > 0 {
		q.advance(at)
		if q.last.After(grantAt) {
			grantAt = q.last
		}
		q.tokens--
		if q.tokens < 0 {
			grantAt = grantAt.Add(q.durationFor(-q.tokens))
		}
		// Not within one interval of a sleeper released late (see release).
		if next := q.lastSlept.Add(q.durationFor(1)); next.After(grantAt) {
			grantAt = next
		}
		// Nor of the last slot promised: two waiters held back to the same
		// time by the rule above would otherwise share a slot, and which
		// goes first would be the timers' choice, not their priority.
		if n := len(q.waiters); n > 0 {
			if next := q.waiters[n-1].grantAt.Add(q.durationFor(1)); next.After(grantAt) {
				grantAt = next
			}
		}
	}
	if !grantAt.After(now) {
		return now, nil, nil, nil
	}
	// The new slot joins the others; the arrival takes the one at its place
	// in line, which is earlier than the new slot when it goes ahead of
	// lower-priority waiters.
	pos := len(q.waiters)
	for pos > 0 && q.waiters[pos-1].prio < prio {
		pos--
	}
	slots := make([]time.Time, 0, len(q.waiters)+1)
	for _, o := range q.waiters {
		slots = append(slots, o.grantAt)
	}
	i, _ := slices.BinarySearchFunc(slots, grantAt, time.Time.Compare)
	slots = slices.Insert(slots, i, grantAt)
	if slots[pos].Sub(start) > budget {
		if q.perSec > 0 {
			q.tokens++ // nothing else happened under the lock: an exact undo
		}
		q.exhausted.Add(1)
		return now, nil, nil, &ExhaustedError{RetryAfter: max(slots[pos].Sub(now), 0), Paused: q.pausedUntil.After(now)}
	}
	w = &quotaWaiter{prio: prio, deadline: start.Add(budget), moved: make(chan struct{}, 1)}
	q.waiters = slices.Insert(q.waiters, pos, w)
	q.assign(slots, w)
	// The waiters pushed back that no longer fit their own wait are shed,
	// newest first; each gives its token back, so those behind it move up.
	for j := len(q.waiters) - 1; j > pos; j-- {
		if o := q.waiters[j]; o.grantAt.After(o.deadline) {
			o.shed = &ExhaustedError{RetryAfter: max(o.grantAt.Sub(now), 0), Paused: q.pausedUntil.After(now)}
			q.exhausted.Add(1)
			q.leave(j)
		}
	}
	return now, w, q.pauseCh, nil
}

// assign gives the waiters their slots (ascending, one each) and tells
// those whose slot moved, except self. q.mu is held.
func (q *Quota) assign(slots []time.Time, self *quotaWaiter) {
	for i, o := range q.waiters {
		if !o.grantAt.Equal(slots[i]) {
			o.grantAt = slots[i]
			if o != self {
				o.notify()
			}
		}
	}
}

// leave removes waiter i and gives its token back: every waiter behind it
// moves up one slot, and the last slot is free again. q.mu is held.
func (q *Quota) leave(i int) {
	gone := q.waiters[i]
	for j := len(q.waiters) - 1; j > i; j-- {
		q.waiters[j].grantAt = q.waiters[j-1].grantAt
		q.waiters[j].notify()
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	gone.notify()
	if q.perSec > 0 {
		q.tokens = min(q.tokens+1, q.burst)
	}
}

// served removes waiter w, whose slot came, keeping the others' slots.
// q.mu is held.
func (q *Quota) served(w *quotaWaiter) {
	if i := slices.Index(q.waiters, w); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
	}
}

func (w *quotaWaiter) notify() {
	select {
	case w.moved <- struct{}{}:
	default:
	}
}

// sleep waits for w's slot, following it as it moves. It returns
// retry=true when a pause that ends after the slot began meanwhile: the
// token is then given back, for the caller to queue again. On ctx's end
// it gives the token back and returns ctx.Err(); shed, it returns the
// *ExhaustedError.
func (q *Quota) sleep(ctx context.Context, w *quotaWaiter, pauseCh <-chan struct{}) (retry bool, err error) {
	q.waiting.Add(1)
	defer q.waiting.Add(-1)
	if q.onWaiting != nil {
		q.onWaiting(w.prio, 1)
		defer q.onWaiting(w.prio, -1)
	}
	q.mu.Lock()
	timer := time.NewTimer(w.grantAt.Sub(q.now()))
	q.mu.Unlock()
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-w.moved:
		case <-pauseCh:
		case <-ctx.Done():
			q.mu.Lock()
			defer q.mu.Unlock()
			if w.shed == nil {
				if i := slices.Index(q.waiters, w); i >= 0 {
					q.leave(i)
				}
			}
			return false, ctx.Err()
		}
		q.mu.Lock()
		if w.shed != nil {
			q.mu.Unlock()
			return false, w.shed
		}
		pauseCh = q.pauseCh
		if q.pausedUntil.After(w.grantAt) {
			// The timer and a new pause may be ready at once: a pause that
			// ends after the slot always wins.
			if i := slices.Index(q.waiters, w); i >= 0 {
				q.leave(i)
			}
			q.mu.Unlock()
			return true, nil
		}
		d := w.grantAt.Sub(q.now())
		if d <= 0 {
			q.served(w)
			q.mu.Unlock()
			return false, nil
		}
		q.mu.Unlock()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
	}
}

// sleepUntil waits d, until grantAt, for a token already granted (the
// pacing of release). It returns retry=true when a pause that ends after
// grantAt began meanwhile: the token is then given back, for the caller
// to queue again. On ctx's end it gives the token back and returns
// ctx.Err().
func (q *Quota) sleepUntil(ctx context.Context, d time.Duration, grantAt time.Time, pauseCh <-chan struct{}) (retry bool, err error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			if q.pausedAfter(grantAt) {
				q.Refund()
				return true, nil
			}
			return false, nil
		case <-ctx.Done():
			q.Refund()
			return false, ctx.Err()
		case <-pauseCh:
			q.mu.Lock()
			later := q.pausedUntil.After(grantAt)
			pauseCh = q.pauseCh
			q.mu.Unlock()
			if later {
				q.Refund()
				return true, nil
			}
		}
	}
}

// pausedAfter reports whether a pause lasts beyond t.
func (q *Quota) pausedAfter(t time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pausedUntil.After(t)
}

// advance adds the tokens earned between q.last and at. q.mu is held.
func (q *Quota) advance(at time.Time) {
	if !at.After(q.last) {
		return
	}
	q.tokens = min(q.tokens+at.Sub(q.last).Seconds()*q.perSec, q.burst)
	q.last = at
}

func (q *Quota) durationFor(tokens float64) time.Duration {
	return time.Duration(tokens / q.perSec * float64(time.Second))
}

// Pause honours an upstream's Retry-After: no token is granted until now+d,
// d being capped at max_pause. A shorter pause never shortens a longer one
// already in force. It does nothing when honor_retry_after is false or
// d <= 0. Waiting callers whose token would come before the new end wait
// on, or fail with a Paused *ExhaustedError when it no longer fits.
//
// It returns the pause now in force from this call on: d capped at
// max_pause, or longer when an earlier pause ends later; 0 when nothing is
// paused (not honoured, d <= 0). Report that, not d: d is only what the
// upstream asked for.
func (q *Quota) Pause(d time.Duration) time.Duration {
	if !q.honor || d <= 0 || q.maxPause <= 0 {
		return 0
	}
	now := q.now()
	until := now.Add(min(d, q.maxPause))
	q.mu.Lock()
	defer q.mu.Unlock()
	if until.After(q.pausedUntil) {
		q.pausedUntil = until
		close(q.pauseCh)
		q.pauseCh = make(chan struct{})
	}
	return q.pausedUntil.Sub(now)
}

// Refund gives back a token that Wait granted for an attempt that was never
// sent (cancelled before it was dialled, say). The bucket never holds more
// than burst tokens.
func (q *Quota) Refund() {
	if q.perSec <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.tokens = min(q.tokens+1, q.burst)
}

// Snapshot returns the Quota's state now.
func (q *Quota) Snapshot() QuotaSnapshot {
	now := q.now()
	q.mu.Lock()
	tokens := q.tokens
	if q.perSec > 0 && now.After(q.last) {
		tokens = min(tokens+now.Sub(q.last).Seconds()*q.perSec, q.burst)
	}
	paused := max(q.pausedUntil.Sub(now), 0)
	q.mu.Unlock()
	if q.perSec <= 0 {
		tokens = q.burst
	}
	return QuotaSnapshot{
		Tokens:    max(tokens, 0),
		Burst:     int(q.burst),
		Rate:      q.rate,
		PausedFor: paused,
		Waiting:   int(q.waiting.Load()),
		Exhausted: q.exhausted.Load(),
	}
}
