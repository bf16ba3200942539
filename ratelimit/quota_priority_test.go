package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// waitingFor polls until q has n sleepers (generous: a slow -race machine).
func waitingFor(t *testing.T, q *Quota, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for q.Snapshot().Waiting != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting = %d, want %d", q.Snapshot().Waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// grant is a queued caller's answer: its token after waited, or err.
type grant struct {
	label  string
	waited time.Duration
	err    error
}

func queueFor(q *Quota, prio int, label string, out chan<- grant) {
	go func() {
		waited, err := q.WaitPriority(context.Background(), prio)
		out <- grant{label, waited, err}
	}()
}

// The Bar of issue 15 for quota tokens: three low-priority waiters queued
// before three high-priority ones get their tokens after them.
func TestQuotaServesByPriorityThenArrival(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 20, Period: time.Second}, 1, time.Minute), clock)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil { // the burst token
		t.Fatal(err)
	}
	out := make(chan grant, 6)
	for i, l := range []string{"low1", "low2", "low3"} {
		queueFor(q, -1, l, out)
		waitingFor(t, q, i+1)
	}
	for i, l := range []string{"high1", "high2", "high3"} {
		queueFor(q, 1, l, out)
		waitingFor(t, q, 4+i)
	}
	// A token every 50ms on the clock: each step lets exactly one go.
	for i, want := range []string{"high1", "high2", "high3", "low1", "low2", "low3"} {
		served(t, clock, out, 50*time.Millisecond, want, time.Duration(i+1)*50*time.Millisecond)
	}
}

// A higher-priority arrival that would not get a token in time takes the
// slot of the first lower-priority waiter; the newest one, pushed past its
// own wait, is turned away at once.
func TestQuotaShedsNewestLowerPriorityForHigher(t *testing.T) {
	// A token every 500ms, waits of at most 1.25s: low1 is due at 0.5s,
	// low2 at 1s; high alone would be due at 1.5s, too late.
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 2, Period: time.Second}, 1, 1250*time.Millisecond), clock)
	_, _ = q.WaitPriority(context.Background(), 0)
	out := make(chan grant, 3)
	queueFor(q, -1, "low1", out)
	waitingFor(t, q, 1)
	queueFor(q, -1, "low2", out)
	waitingFor(t, q, 2)
	queueFor(q, 1, "high", out)
	g := <-out // the clock has not moved: this is the shed
	var ex *ExhaustedError
	if g.label != "low2" || !errors.As(g.err, &ex) {
		t.Fatalf("first answer: %s %v, want low2 shed with ExhaustedError", g.label, g.err)
	}
	if ex.RetryAfter != 1500*time.Millisecond {
		t.Errorf("shed low2's RetryAfter = %v, want 1.5s (the slot it was pushed to)", ex.RetryAfter)
	}
	// high took low1's slot at 0.5s, and low1 moved to 1s.
	served(t, clock, out, 500*time.Millisecond, "high", 500*time.Millisecond)
	served(t, clock, out, 500*time.Millisecond, "low1", time.Second)
	if s := q.Snapshot(); s.Waiting != 0 || s.Exhausted != 1 {
		t.Errorf("snapshot %+v: want nobody waiting and one exhausted (the shed)", s)
	}
}

// An arrival of the same or a lower priority never displaces anyone: it
// is turned away as before when its own token would come too late.
func TestQuotaEqualPriorityDoesNotShed(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 2, Period: time.Second}, 1, 1250*time.Millisecond), clock)
	_, _ = q.WaitPriority(context.Background(), 0)
	out := make(chan grant, 2)
	queueFor(q, 1, "high1", out)
	waitingFor(t, q, 1)
	queueFor(q, 1, "high2", out)
	waitingFor(t, q, 2)
	_, err := q.WaitPriority(context.Background(), 1)
	if ex := asExhausted(t, err); ex.RetryAfter != 1500*time.Millisecond {
		t.Errorf("a third high one: RetryAfter = %v, want 1.5s (its own slot, behind both)", ex.RetryAfter)
	}
	served(t, clock, out, 500*time.Millisecond, "high1", 500*time.Millisecond)
	served(t, clock, out, 500*time.Millisecond, "high2", time.Second)
	if s := q.Snapshot(); s.Waiting != 0 || s.Exhausted != 1 {
		t.Errorf("snapshot %+v: want nobody waiting and one exhausted (the third)", s)
	}
}

// A waiter that leaves gives its slot to those behind it, who move up.
func TestQuotaLeaverMovesTheQueueUp(t *testing.T) {
	// A token every 2s: the second waiter is due at 4s, and at 2s once
	// the first leaves.
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: 2 * time.Second}, 1, time.Minute), clock)
	_, _ = q.WaitPriority(context.Background(), 0)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := q.WaitPriority(ctx, 0); left <- err }()
	waitingFor(t, q, 1)
	out := make(chan grant, 1)
	queueFor(q, 0, "second", out)
	waitingFor(t, q, 2)
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("leaver: %v", err)
	}
	// Served at 2s, the leaver's slot, not at 4s, its own.
	served(t, clock, out, 2*time.Second, "second", 2*time.Second)
}

// served advances clock by step and expects the next answer on out to be
// label's token ("": anyone's), granted after it waited waited on the clock.
func served(t *testing.T, clock *fakeClock, out <-chan grant, step time.Duration, label string, waited time.Duration) {
	t.Helper()
	clock.Advance(step)
	select {
	case g := <-out:
		if g.err != nil || label != "" && g.label != label || g.waited != waited {
			t.Fatalf("at +%v: %s (%v) after %v, want %s after %v", step, g.label, g.err, g.waited, label, waited)
		}
	case <-time.After(10 * time.Second): // real time: nobody was woken
		t.Fatalf("nobody served %v on (want %q)", step, label)
	}
}

// Two callers whose reservations cross — the first has its token from the
// source but is not yet queued when the second takes the next one and
// queues — are given the source's two slots, 100ms and 200ms. The first
// used to be queued an interval after the second (300ms), leaving the
// token at 100ms unused and every later one an interval late: 40 tokens
// at 10/s then took 4s, not 3.9s (TestQuotaSpreadsTokensAtTheRate failed
// that way in about a third of the package's -race runs).
func TestQuotaCrossedArrivalsLeaveNoSlotUnused(t *testing.T) {
	clock := newFakeClock()
	cfg := quotaConfig(config.Rate{N: 10, Period: time.Second}, 1, time.Minute)
	src := &heldSource{Bucket: NewBucket(cfg), held: make(chan struct{}), release: make(chan struct{})}
	q := newQuota(cfg, src, nil, clock)
	_, _ = q.WaitPriority(context.Background(), 0) // the burst token
	src.hold.Store(true)
	out := make(chan grant, 2)
	queueFor(q, 0, "first", out)
	<-src.held // first has the token due at 100ms, and is not queued yet
	queueFor(q, 0, "second", out)
	waitingFor(t, q, 1) // second has the one at 200ms, and is queued
	close(src.release)
	waitingFor(t, q, 2)
	served(t, clock, out, 100*time.Millisecond, "", 100*time.Millisecond)
	served(t, clock, out, 100*time.Millisecond, "", 200*time.Millisecond)
}

// heldSource is a Bucket whose next Take, once hold is set, signals held
// as it returns and waits for release.
type heldSource struct {
	*Bucket
	hold    atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (s *heldSource) Take(now, at, limit time.Time) (time.Time, error) {
	due, err := s.Bucket.Take(now, at, limit)
	if s.hold.CompareAndSwap(true, false) {
		s.held <- struct{}{}
		<-s.release
	}
	return due, err
}
