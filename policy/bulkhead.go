package policy

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/clock"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Bulkhead caps concurrent requests: a route's own bulkhead, or an
// upstream's concurrency (one set of slots for every route to it). A slot
// is held until the response body is finished or the client leaves, not
// just until headers arrive (failsafe's HTTP helpers release it at
// headers).
//
// Callers that find every slot taken wait in a queue of at most max_queue,
// served by priority, then arrival; a full queue sheds its newest waiter of
// a lower priority for a higher-priority arrival, or else turns the
// arrival away. failsafe-go's bulkhead serves waiters in arrival order
// only and has no bound on them, hence this one.
type Bulkhead struct {
	name     string
	obs      Observer
	max      int
	maxQueue int
	maxWait  time.Duration
	clock    clock.Clock // clock.Real; tests set their own

	mu      sync.Mutex
	used    int
	waiters []*waiter // in the order they are served
}

// waiter is one caller queued for a slot.
type waiter struct {
	prio Priority
	// done is closed when a slot is handed over (err nil) or the waiter was
	// removed by a rejection (err, shed); both are set under Bulkhead.mu.
	done chan struct{}
	err  error
}

// NewBulkhead builds a bulkhead from a resolved config block. name labels
// its queue metrics (the route's, or the upstream's for its concurrency);
// obs nil reports nothing.
func NewBulkhead(name string, c *config.Bulkhead, obs Observer) *Bulkhead {
	if obs == nil {
		obs = NopObserver{}
	}
	return &Bulkhead{name: name, obs: obs, max: c.MaxConcurrent, maxQueue: c.MaxQueue, maxWait: c.MaxWait.D(), clock: clock.Real}
}

// InFlight is the number of slots taken.
func (b *Bulkhead) InFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Waiting is the number of callers queued for a slot.
func (b *Bulkhead) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

// Max is the number of slots.
func (b *Bulkhead) Max() int { return b.max }

// acquire takes a slot, waiting in the queue at priority prio for at most
// max_wait (and never past ctx's deadline). It fails with a
// *RejectedError wrapping ErrBulkheadFull whose Reason says why, or with
// ctx's error when ctx ends first.
func (b *Bulkhead) acquire(ctx context.Context, prio Priority) error {
	b.mu.Lock()
	if b.used < b.max && len(b.waiters) == 0 {
		b.used++
		b.mu.Unlock()
		return nil
	}
	wait := b.maxWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, dl.Sub(b.clock.Now()))
	}
	if b.maxWait <= 0 || b.maxQueue <= 0 {
		b.mu.Unlock()
		return &RejectedError{Err: ErrBulkheadFull, Reason: QueueFull}
	}
	if wait <= 0 { // the route's own time is up: nothing left to wait with
		b.mu.Unlock()
		return &RejectedError{Err: ErrBulkheadFull, Reason: WaitRanOut}
	}
	if len(b.waiters) >= b.maxQueue {
		// The newest waiter of the lowest priority is last in line.
		last := b.waiters[len(b.waiters)-1]
		if last.prio >= prio {
			b.mu.Unlock()
			return &RejectedError{Err: ErrBulkheadFull, Reason: QueueFull}
		}
		b.waiters = b.waiters[:len(b.waiters)-1]
		last.err = &RejectedError{Err: ErrBulkheadFull, Reason: Shed}
		close(last.done)
	}
	w := &waiter{prio: prio, done: make(chan struct{})}
	b.waiters = ratelimit.QueueByPriority(b.waiters, w, func(w *waiter) int { return int(w.prio) })
	b.mu.Unlock()

	b.obs.QueueWaiting("bulkhead", b.name, prio, 1)
	start := b.clock.Now()
	err := b.await(ctx, w, wait)
	b.obs.QueueWaiting("bulkhead", b.name, prio, -1)
	b.obs.QueueWaited("bulkhead", b.name, prio, b.clock.Now().Sub(start))
	return err
}

// await waits for w's slot, for at most wait.
func (b *Bulkhead) await(ctx context.Context, w *waiter, wait time.Duration) error {
	var gaveUp error
	switch clock.Wait(ctx, b.clock, wait, w.done) {
	case clock.Woken:
		return w.err
	case clock.Elapsed:
		gaveUp = &RejectedError{Err: ErrBulkheadFull, Reason: WaitRanOut}
	case clock.Done:
		gaveUp = ctx.Err()
	}
	b.mu.Lock()
	if i := slices.Index(b.waiters, w); i >= 0 {
		b.waiters = slices.Delete(b.waiters, i, i+1)
		b.mu.Unlock()
		return gaveUp
	}
	err := w.err // served or shed as we gave up: the answer is already set
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		b.release() // the slot goes to the next in line
		return ctx.Err()
	}
	return nil // the slot came as the wait ran out: take it
}

// release gives a slot back: to the first waiter in line, if any.
func (b *Bulkhead) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) > 0 {
		w := b.waiters[0]
		b.waiters = slices.Delete(b.waiters, 0, 1)
		close(w.done) // the slot passes over: used stays
		return
	}
	b.used--
}
