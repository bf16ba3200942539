package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/clock"
)

// Quota is an upstream's own limit: one per upstream, shared by every route
// to it, and spent by every attempt actually sent (first tries, retries,
// hedges, probes). It is a token bucket whose waiters queue by priority,
// then arrival, plus a pause that the upstream can impose with Retry-After.
// Callers that waited are let go at least one token interval apart in
// real time, even when a timer fires late (see release), so that a quota
// set to an upstream's own per-second limit keeps within it.
// Its tokens come from a TokenSource: a Bucket here, or one on the store.
// The zero value is not usable; call NewQuota.
type Quota struct {
	src      TokenSource
	perSec   float64 // tokens per second; 0 means no limit, only pauses
	burst    int
	maxWait  time.Duration
	honor    bool
	maxPause time.Duration
	rate     string
	clock    clock.Clock
	obs      QueueObserver

	mu          sync.Mutex
	pausedUntil time.Time     // the latest pause this process knows of
	pauseCh     chan struct{} // closed, and replaced, when a pause is extended
	lastSlept   time.Time     // when the last caller that slept for its token was let go
	// waiters sleep for their tokens, in the order they are served: by
	// priority, then arrival. Their grant times (slots) are the source's
	// promises and ascend along the slice; a higher-priority arrival takes
	// the slot of the first lower-priority waiter, which moves one slot
	// down, and so on (see reserve).
	waiters []*quotaWaiter

	waiting   atomic.Int64
	exhausted atomic.Uint64
}

// TokenSource is where a Quota's tokens come from: a Bucket in this
// process, or a bucket on a store shared by replicas. The Quota does the
// rest — the queue by priority, pauses, pacing, waiting, counting — the
// same for either.
type TokenSource interface {
	// Take reserves one token, due no earlier than at (now, or the end of
	// a pause this process knows of); if it would be due after limit (zero:
	// no limit) and after now, it spends nothing and returns *ExhaustedError.
	Take(now, at, limit time.Time) (due time.Time, err error)
	// Refund gives back a token Take granted.
	Refund()
	// Pause holds every token back for d from now for everyone who shares
	// the source, and returns the pause in force (at least d).
	Pause(now time.Time, d time.Duration) time.Duration
	// Level is the tokens free now and what remains of a pause, as the
	// source knows them.
	Level(now time.Time) (tokens float64, paused time.Duration)
}

// QueueObserver hears of a Quota's sleepers: Waiting(prio, 1) when a
// caller starts sleeping for its token and Waiting(prio, -1) when it stops,
// and Waited(prio, d) with the time it spent, served or not. Only callers
// that sleep are reported.
type QueueObserver interface {
	Waiting(prio, delta int)
	Waited(prio int, d time.Duration)
}

type nopQueue struct{}

func (nopQueue) Waiting(int, int)          {}
func (nopQueue) Waited(int, time.Duration) {}

// quotaWaiter is one caller sleeping for its token.
type quotaWaiter struct {
	prio     int
	grantAt  time.Time // its slot: moved by arrivals ahead of it and by leavers
	deadline time.Time // the latest slot it can use (start + its budget)
	shed     *ExhaustedError
	moved    chan struct{} // buffered 1: grantAt, shed or the pause changed
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

// NewQuota returns a Quota for cfg whose tokens come from src
// (NewBucket(cfg) for one in this process). max_wait <= 0 means never
// wait: a token must be free at once. With honor_retry_after, Pause is
// capped at max_pause, and max_pause <= 0 means no pause at all. obs nil
// reports nothing.
func NewQuota(cfg config.Quota, src TokenSource, obs QueueObserver) *Quota {
	return newQuota(cfg, src, obs, clock.Real)
}

func newQuota(cfg config.Quota, src TokenSource, obs QueueObserver, c clock.Clock) *Quota {
	if obs == nil {
		obs = nopQueue{}
	}
	return &Quota{
		src: src, perSec: cfg.Rate.PerSecond(), burst: max(cfg.Burst, 1), maxWait: max(cfg.MaxWait.D(), 0),
		honor: cfg.HonorRetryAfter, maxPause: cfg.MaxPause.D(), rate: cfg.Rate.String(),
		clock: c, obs: obs, pauseCh: make(chan struct{}),
	}
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
	start := q.clock.Now()
	budget := q.maxWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, dl.Sub(start))
	}
	since := func() time.Duration { return max(q.clock.Now().Sub(start), 0) }
	slept := false
	defer func() {
		if slept {
			q.obs.Waited(prio, since())
		}
	}()
	for {
		w, err := q.reserve(start, budget, prio)
		if err != nil {
			return 0, err
		}
		if w == nil {
			if !slept {
				return 0, nil // granted at once: no wait to report
			}
			return since(), nil
		}
		slept = true
		retry, err := q.sleep(ctx, w)
		if err == nil && !retry {
			retry, err = q.pace(ctx, w.grantAt)
		}
		if err != nil {
			return since(), err
		}
		if !retry {
			return since(), nil
		}
		// A pause now ends after our grant: the token we held was given
		// back; queue again behind the pause, within what is left of the budget.
	}
}

// pace lets go a caller that slept until its token's time (grantAt), no
// sooner than one token interval after the previous such caller, sleeping
// until then if need be (see release); retry and err as sleep's.
func (q *Quota) pace(ctx context.Context, grantAt time.Time) (retry bool, err error) {
	now, paceAt, pauseCh := q.release()
	for paceAt.After(now) {
		out := clock.Until(ctx, q.clock, paceAt, pauseCh)
		if out == clock.Done {
			q.src.Refund()
			return false, ctx.Err()
		}
		if q.pausedAfter(grantAt) {
			q.src.Refund()
			return true, nil
		}
		if out == clock.Elapsed {
			break
		}
		q.mu.Lock()
		pauseCh = q.pauseCh // a pause that ends before our time: sleep on
		q.mu.Unlock()
		now = q.clock.Now()
	}
	return false, nil
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
	now = q.clock.Now()
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

// reserve takes a token from the source and says when it may be used: now
// (w nil), or at the slot of the waiter w it queued (at priority prio);
// or, if that is later than start+budget, takes nothing and returns
// *ExhaustedError.
func (q *Quota) reserve(start time.Time, budget time.Duration, prio int) (w *quotaWaiter, err error) {
	now := q.clock.Now()
	q.mu.Lock()
	// Tokens are reckoned never inside a pause: during one, every
	// reservation is made as of its end, so the waiters it releases are
	// spread at the rate, not let go at once.
	at := later(now, q.pausedUntil)
	// The source may refuse at once what would come too late, unless the
	// arrival can take a lower-priority waiter's earlier slot.
	limit := start.Add(budget)
	if n := len(q.waiters); n > 0 && q.waiters[n-1].prio < prio {
		limit = time.Time{}
	}
	q.mu.Unlock()
	grantAt, err := q.src.Take(now, at, limit)
	if err != nil {
		q.exhausted.Add(1)
		return nil, err
	}
	q.mu.Lock()
	if q.perSec > 0 {
		// Not within one interval of a sleeper released late (see release).
		grantAt = later(grantAt, q.lastSlept.Add(q.durationFor(1)))
	}
	if len(q.waiters) == 0 && !grantAt.After(now) {
		q.mu.Unlock()
		return nil, nil
	}
	// The new slot joins the others in time order: it can be earlier than
	// slots promised meanwhile to callers whose Take came after this one's
	// (Take is not under q.mu). Slots stay one interval apart: two waiters
	// held back to the same time by the rule above would otherwise share
	// one, and which goes first would be the timers' choice, not their
	// priority. The arrival takes the slot at its place in line, which is
	// earlier than the new slot when it goes ahead of lower-priority
	// waiters or arrived before them.
	slots := make([]time.Time, 0, len(q.waiters)+1)
	for _, o := range q.waiters {
		slots = append(slots, o.grantAt)
	}
	i, _ := slices.BinarySearchFunc(slots, grantAt, time.Time.Compare)
	slots = slices.Insert(slots, i, grantAt)
	if q.perSec > 0 {
		for j := max(i, 1); j < len(slots); j++ {
			slots[j] = later(slots[j], slots[j-1].Add(q.durationFor(1)))
		}
	}
	w = &quotaWaiter{prio: prio, deadline: start.Add(budget), moved: make(chan struct{}, 1)}
	q.waiters = QueueByPriority(q.waiters, w, func(w *quotaWaiter) int { return w.prio })
	pos := slices.Index(q.waiters, w)
	if slots[pos].Sub(start) > budget {
		q.waiters = slices.Delete(q.waiters, pos, pos+1)
		ex := &ExhaustedError{RetryAfter: max(slots[pos].Sub(now), 0), Paused: q.pausedUntil.After(now)}
		q.mu.Unlock()
		q.src.Refund()
		q.exhausted.Add(1)
		return nil, ex
	}
	q.assign(slots, w)
	// The waiters pushed back that no longer fit their own wait are shed,
	// newest first; each gives its token back, so those behind it move up.
	shed := 0
	for j := len(q.waiters) - 1; j > pos; j-- {
		if o := q.waiters[j]; o.grantAt.After(o.deadline) {
			o.shed = &ExhaustedError{RetryAfter: max(o.grantAt.Sub(now), 0), Paused: q.pausedUntil.After(now)}
			q.exhausted.Add(1)
			q.leave(j)
			shed++
		}
	}
	q.mu.Unlock()
	for range shed {
		q.src.Refund()
	}
	return w, nil
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

// leave removes waiter i, whose token the caller gives back (outside
// q.mu): every waiter behind it moves up one slot, and the last slot is
// free again. q.mu is held.
func (q *Quota) leave(i int) {
	gone := q.waiters[i]
	for j := len(q.waiters) - 1; j > i; j-- {
		q.waiters[j].grantAt = q.waiters[j-1].grantAt
		q.waiters[j].notify()
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	gone.notify()
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
func (q *Quota) sleep(ctx context.Context, w *quotaWaiter) (retry bool, err error) {
	q.waiting.Add(1)
	defer q.waiting.Add(-1)
	q.obs.Waiting(w.prio, 1)
	defer q.obs.Waiting(w.prio, -1)
	for {
		q.mu.Lock()
		at := w.grantAt
		q.mu.Unlock()
		// Until the slot, not for the time to it: the clock may move
		// between the reading and the timer (a test's clock does).
		done := clock.Until(ctx, q.clock, at, w.moved) == clock.Done
		q.mu.Lock()
		if w.shed != nil {
			q.mu.Unlock()
			return false, w.shed
		}
		// The timer and a new pause may be ready at once: a pause that
		// ends after the slot always wins.
		if done || q.pausedUntil.After(w.grantAt) {
			if i := slices.Index(q.waiters, w); i >= 0 {
				q.leave(i)
			}
			q.mu.Unlock()
			q.src.Refund()
			if done {
				return false, ctx.Err()
			}
			return true, nil
		}
		if !w.grantAt.After(q.clock.Now()) {
			q.served(w)
			q.mu.Unlock()
			return false, nil
		}
		q.mu.Unlock()
	}
}

// pausedAfter reports whether a pause lasts beyond t.
func (q *Quota) pausedAfter(t time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pausedUntil.After(t)
}

func (q *Quota) durationFor(tokens float64) time.Duration {
	return time.Duration(tokens / q.perSec * float64(time.Second))
}

// Pause honours an upstream's Retry-After: no token is granted until now+d,
// d being capped at max_pause, by this process or (a shared source) any
// other. A shorter pause never shortens a longer one already in force. It
// does nothing when honor_retry_after is false or d <= 0. Waiting callers
// whose token would come before the new end wait on, or fail with a Paused
// *ExhaustedError when it no longer fits.
//
// It returns the pause now in force from this call on: d capped at
// max_pause, or longer when an earlier pause ends later; 0 when nothing is
// paused (not honoured, d <= 0). Report that, not d: d is only what the
// upstream asked for.
func (q *Quota) Pause(d time.Duration) time.Duration {
	if !q.honor || d <= 0 || q.maxPause <= 0 {
		return 0
	}
	now := q.clock.Now()
	inForce := q.src.Pause(now, min(d, q.maxPause))
	q.mu.Lock()
	defer q.mu.Unlock()
	if until := now.Add(inForce); until.After(q.pausedUntil) {
		q.pausedUntil = until
		close(q.pauseCh)
		q.pauseCh = make(chan struct{})
		for _, w := range q.waiters {
			w.notify()
		}
	}
	return q.pausedUntil.Sub(now)
}

// Refund gives back a token Wait granted for an attempt that was never
// sent (cancelled before it was dialled, say).
func (q *Quota) Refund() { q.src.Refund() }

// Snapshot returns the Quota's state now.
func (q *Quota) Snapshot() QuotaSnapshot {
	now := q.clock.Now()
	tokens, paused := q.src.Level(now)
	q.mu.Lock()
	paused = max(paused, q.pausedUntil.Sub(now), 0)
	q.mu.Unlock()
	return QuotaSnapshot{
		Tokens:    max(tokens, 0),
		Burst:     q.burst,
		Rate:      q.rate,
		PausedFor: paused,
		Waiting:   int(q.waiting.Load()),
		Exhausted: q.exhausted.Load(),
	}
}

// QueueByPriority inserts w into queue, which is in the order its waiters
// are served: after every waiter of the same or a higher priority.
func QueueByPriority[T any](queue []T, w T, prio func(T) int) []T {
	i := len(queue)
	for i > 0 && prio(queue[i-1]) < prio(w) {
		i--
	}
	return slices.Insert(queue, i, w)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
