package policy

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
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

	mu      sync.Mutex
	used    int
	waiters []*waiter // in the order they are served
}

// waiter is one caller queued for a slot.
type waiter struct {
	prio Priority
	// done receives nil when a slot is handed over, or the rejection that
	// removed the waiter (shed). Buffered: the sender never blocks.
	done chan error
}

// Why a bulkhead turned a caller away, as the error's detail says it.
const (
	detailQueueFull  = "Too many requests are in progress or waiting for this route or upstream: the queue is full, so this one was turned away at once."
	detailWaitRanOut = "Too many requests are in progress for this route or upstream: this one waited its maximum time in the queue without getting a slot."
	detailShed       = "Too many requests are waiting for this route or upstream: this one gave its place in the queue to a higher-priority request."
)

// NewBulkhead builds a bulkhead from a resolved config block. name labels
// its queue metrics (the route's, or the upstream's for its concurrency);
// obs nil reports nothing.
func NewBulkhead(name string, c *config.Bulkhead, obs Observer) *Bulkhead {
	if obs == nil {
		obs = NopObserver{}
	}
	return &Bulkhead{name: name, obs: obs, max: c.MaxConcurrent, maxQueue: c.MaxQueue, maxWait: c.MaxWait.D()}
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
// *RejectedError wrapping ErrBulkheadFull whose Detail says why, or with
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
		wait = min(wait, time.Until(dl))
	}
	if b.maxWait <= 0 || b.maxQueue <= 0 {
		b.mu.Unlock()
		return &RejectedError{Err: ErrBulkheadFull, Detail: detailQueueFull}
	}
	if wait <= 0 { // the route's own time is up: nothing left to wait with
		b.mu.Unlock()
		return &RejectedError{Err: ErrBulkheadFull, Detail: detailWaitRanOut}
	}
	if len(b.waiters) >= b.maxQueue {
		// The newest waiter of the lowest priority is last in line.
		last := b.waiters[len(b.waiters)-1]
		if last.prio >= prio {
			b.mu.Unlock()
			return &RejectedError{Err: ErrBulkheadFull, Detail: detailQueueFull}
		}
		b.waiters = b.waiters[:len(b.waiters)-1]
		last.done <- &RejectedError{Err: ErrBulkheadFull, Detail: detailShed}
	}
	w := &waiter{prio: prio, done: make(chan error, 1)}
	// After every waiter of the same or a higher priority: by priority, then arrival.
	i := len(b.waiters)
	for i > 0 && b.waiters[i-1].prio < prio {
		i--
	}
	b.waiters = slices.Insert(b.waiters, i, w)
	b.mu.Unlock()

	b.obs.QueueWaiting("bulkhead", b.name, prio, 1)
	start := time.Now()
	err := b.await(ctx, w, wait)
	b.obs.QueueWaiting("bulkhead", b.name, prio, -1)
	b.obs.QueueWaited("bulkhead", b.name, prio, time.Since(start))
	return err
}

// await waits for w's slot, for at most wait.
func (b *Bulkhead) await(ctx context.Context, w *waiter, wait time.Duration) error {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var gaveUp error
	select {
	case err := <-w.done:
		return err
	case <-timer.C:
		gaveUp = &RejectedError{Err: ErrBulkheadFull, Detail: detailWaitRanOut}
	case <-ctx.Done():
		gaveUp = ctx.Err()
	}
	b.mu.Lock()
	if i := slices.Index(b.waiters, w); i >= 0 {
		b.waiters = slices.Delete(b.waiters, i, i+1)
		b.mu.Unlock()
		return gaveUp
	}
	b.mu.Unlock()
	// Served or shed as we gave up: the answer is already sent.
	if err := <-w.done; err != nil {
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
		w.done <- nil // the slot passes over: used stays
		return
	}
	b.used--
}
