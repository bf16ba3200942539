package policy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

func newTestBulkhead(max, queue int, wait time.Duration) *Bulkhead {
	return NewBulkhead("r", &config.Bulkhead{MaxConcurrent: max, MaxQueue: queue, MaxWait: config.Duration(wait)}, nil)
}

// awaitWaiters polls until b has n waiters (generous: a slow -race machine).
func awaitWaiters(t *testing.T, b *Bulkhead, n int) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d waiters", n), func() bool { return b.Waiting() == n })
}

// queued starts a caller at prio that, once it has a slot, records its
// label in order and gives the slot back at once, to the next in line.
func queued(b *Bulkhead, prio Priority, label string, order chan<- string, errs chan<- error) {
	go func() {
		if err := b.acquire(context.Background(), prio); err != nil {
			errs <- err
			return
		}
		order <- label
		b.release()
	}()
}

func reasonOf(t *testing.T, err error) Reason {
	t.Helper()
	if !errors.Is(err, ErrBulkheadFull) {
		t.Fatalf("err = %v, want ErrBulkheadFull", err)
	}
	return ReasonOf(err)
}

// The Bar of issue 15: three low-priority waiters queued before three
// high-priority ones are served after them.
func TestBulkheadServesByPriorityThenArrival(t *testing.T) {
	b := newTestBulkhead(1, 10, time.Minute)
	if err := b.acquire(context.Background(), Normal); err != nil {
		t.Fatal(err)
	}
	order, errs := make(chan string, 8), make(chan error, 8)
	labels := []struct {
		prio  Priority
		label string
	}{{Low, "low1"}, {Low, "low2"}, {Low, "low3"}, {Normal, "normal1"}, {High, "high1"}, {High, "high2"}, {High, "high3"}}
	for i, l := range labels {
		queued(b, l.prio, l.label, order, errs)
		awaitWaiters(t, b, i+1) // one at a time, so arrival order is known
	}
	b.release()
	want := []string{"high1", "high2", "high3", "normal1", "low1", "low2", "low3"}
	for i, w := range want {
		select {
		case got := <-order:
			if got != w {
				t.Fatalf("served #%d = %s, want %s (order %v)", i, got, w, want)
			}
		case err := <-errs:
			t.Fatalf("a waiter failed: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("served only %d of %d", i, len(want))
		}
	}
	if n := b.InFlight(); n != 0 {
		t.Errorf("in flight = %d after every release, want 0", n)
	}
}

func TestBulkheadFullQueueShedsNewestLowerPriority(t *testing.T) {
	b := newTestBulkhead(1, 2, time.Minute)
	_ = b.acquire(context.Background(), Normal)
	order, errs := make(chan string, 4), make(chan error, 4)
	queued(b, Low, "low1", order, errs)
	awaitWaiters(t, b, 1)
	queued(b, Low, "low2", order, errs)
	awaitWaiters(t, b, 2)
	queued(b, High, "high", order, errs) // the queue is full: low2, the newest low, goes
	select {
	case err := <-errs:
		if d := reasonOf(t, err); d != Shed {
			t.Errorf("shed detail = %q", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no waiter was shed")
	}
	awaitWaiters(t, b, 2)
	b.release()
	for _, w := range []string{"high", "low1"} {
		if got := <-order; got != w {
			t.Fatalf("served %s, want %s", got, w)
		}
	}
}

func TestBulkheadFullQueueTurnsAwayEqualPriority(t *testing.T) {
	b := newTestBulkhead(1, 1, time.Minute)
	_ = b.acquire(context.Background(), Normal)
	order, errs := make(chan string, 2), make(chan error, 2)
	queued(b, High, "high", order, errs)
	awaitWaiters(t, b, 1)
	err := b.acquire(context.Background(), High) // nobody lower to shed
	if d := reasonOf(t, err); d != QueueFull {
		t.Errorf("detail = %q, want the queue-full one", d)
	}
	b.release()
	if got := <-order; got != "high" {
		t.Errorf("served %s", got)
	}
}

// A waiter is turned away when max_wait has passed on the bulkhead's
// clock, not before; it leaves the queue, and its wait is reported.
func TestBulkheadWaitRunsOut(t *testing.T) {
	clock := testkit.NewClock()
	waited := &waitedObserver{}
	b := newTestBulkhead(1, 5, time.Minute)
	b.clock, b.obs = clock, waited
	_ = b.acquire(context.Background(), Normal)
	done := make(chan error, 1)
	go func() { done <- b.acquire(context.Background(), High) }()
	testkit.WaitFor(t, 10*time.Second, "the waiter's timer", func() bool { return clock.Timers() == 1 })

	clock.Advance(time.Minute - time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("answered %v with 1ms of its wait left", err)
	default:
	}
	if n := b.Waiting(); n != 1 {
		t.Fatalf("waiting = %d with 1ms of the wait left, want 1", n)
	}
	clock.Advance(time.Millisecond)
	select {
	case err := <-done:
		if d := reasonOf(t, err); d != WaitRanOut {
			t.Errorf("detail = %q, want the wait-ran-out one", d)
		}
	case <-time.After(10 * time.Second): // real time: the timer did not wake it
		t.Fatal("still waiting once max_wait had passed")
	}
	if n := b.Waiting(); n != 0 {
		t.Errorf("waiting = %d after the wait ran out, want 0", n)
	}
	if waited.d != time.Minute {
		t.Errorf("reported wait %v, want the minute of max_wait", waited.d)
	}
}

// waitedObserver keeps the last queue wait reported.
type waitedObserver struct {
	NopObserver
	d time.Duration
}

func (o *waitedObserver) QueueWaited(_, _ string, _ Priority, d time.Duration) { o.d = d }

func TestBulkheadNoWaitRejectsAtOnce(t *testing.T) {
	for _, b := range []*Bulkhead{newTestBulkhead(1, 5, 0), newTestBulkhead(1, 0, time.Minute)} {
		_ = b.acquire(context.Background(), Normal)
		if d := reasonOf(t, b.acquire(context.Background(), High)); d != QueueFull {
			t.Errorf("detail = %q, want the queue-full one", d)
		}
	}
}

func TestBulkheadCancelledWaiterLeavesNoSlot(t *testing.T) {
	b := newTestBulkhead(1, 5, time.Minute)
	_ = b.acquire(context.Background(), Normal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.acquire(ctx, Normal) }()
	awaitWaiters(t, b, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	b.release()
	if n := b.InFlight(); n != 0 {
		t.Errorf("in flight = %d, want 0", n)
	}
	if err := b.acquire(context.Background(), Low); err != nil {
		t.Errorf("a free slot refused: %v", err)
	}
}

// The uncontended path, against what policy.Bulkhead did before queues:
// failsafe-go's bulkhead plus an atomic in-flight count.
func BenchmarkBulkheadUncontended(b *testing.B) {
	b.Run("queue", func(b *testing.B) {
		bh := newTestBulkhead(100, 100, time.Second)
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := bh.acquire(ctx, High); err != nil {
				b.Fatal(err)
			}
			bh.release()
		}
	})
	b.Run("failsafe", func(b *testing.B) {
		bh := bulkhead.New[any](100)
		var inFlight atomic.Int64
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := bh.AcquirePermitWithMaxWait(ctx, time.Second); err != nil {
				b.Fatal(err)
			}
			inFlight.Add(1)
			inFlight.Add(-1)
			bh.ReleasePermit()
		}
	})
}
