package ratelimit

import (
	"context"
	"errors"
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

type grant struct {
	label string
	err   error
}

func queueFor(q *Quota, prio int, label string, out chan<- grant) {
	go func() {
		_, err := q.WaitPriority(context.Background(), prio)
		out <- grant{label, err}
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
		clock.Advance(50 * time.Millisecond)
		g := <-out
		if g.err != nil || g.label != want {
			t.Fatalf("token #%d went to %s (%v), want %s", i, g.label, g.err, want)
		}
	}
}

// A higher-priority arrival that would not get a token in time takes the
// slot of the first lower-priority waiter; the newest one, pushed past its
// own wait, is turned away at once.
func TestQuotaShedsNewestLowerPriorityForHigher(t *testing.T) {
	// A token every 500ms, waits of at most 1.25s: low1 is due at 0.5s,
	// low2 at 1s; high alone would be due at 1.5s, too late.
	q := realQuota(quotaConfig(config.Rate{N: 2, Period: time.Second}, 1, 1250*time.Millisecond))
	_, _ = q.WaitPriority(context.Background(), 0)
	out := make(chan grant, 3)
	queueFor(q, -1, "low1", out)
	waitingFor(t, q, 1)
	queueFor(q, -1, "low2", out)
	waitingFor(t, q, 2)
	queueFor(q, 1, "high", out)
	g := <-out
	var ex *ExhaustedError
	if g.label != "low2" || !errors.As(g.err, &ex) {
		t.Fatalf("first answer: %s %v, want low2 shed with ExhaustedError", g.label, g.err)
	}
	for _, want := range []string{"high", "low1"} {
		if g := <-out; g.err != nil || g.label != want {
			t.Fatalf("then %s (%v), want %s", g.label, g.err, want)
		}
	}
	if s := q.Snapshot(); s.Waiting != 0 || s.Exhausted != 1 {
		t.Errorf("snapshot %+v: want nobody waiting and one exhausted (the shed)", s)
	}
}

// An arrival of the same or a lower priority never displaces anyone: it
// is turned away as before when its own token would come too late.
func TestQuotaEqualPriorityDoesNotShed(t *testing.T) {
	q := realQuota(quotaConfig(config.Rate{N: 2, Period: time.Second}, 1, 1250*time.Millisecond))
	_, _ = q.WaitPriority(context.Background(), 0)
	out := make(chan grant, 2)
	queueFor(q, 1, "high1", out)
	waitingFor(t, q, 1)
	queueFor(q, 1, "high2", out)
	waitingFor(t, q, 2)
	var ex *ExhaustedError
	if _, err := q.WaitPriority(context.Background(), 1); !errors.As(err, &ex) {
		t.Fatalf("a third high one: %v, want ExhaustedError", err)
	}
	for _, want := range []string{"high1", "high2"} {
		if g := <-out; g.err != nil || g.label != want {
			t.Fatalf("%s (%v), want %s", g.label, g.err, want)
		}
	}
}

// A waiter that leaves gives its slot to those behind it, who move up.
func TestQuotaLeaverMovesTheQueueUp(t *testing.T) {
	// A token every 2s: the second waiter is due at 4s, and at 2s once
	// the first leaves, far enough ahead to look at it.
	q := realQuota(quotaConfig(config.Rate{N: 1, Period: 2 * time.Second}, 1, time.Minute))
	_, _ = q.WaitPriority(context.Background(), 0)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := q.WaitPriority(ctx, 0); left <- err }()
	waitingFor(t, q, 1)
	out := make(chan grant, 1)
	queueFor(q, 0, "second", out)
	waitingFor(t, q, 2)
	q.mu.Lock()
	before := q.waiters[1].grantAt
	q.mu.Unlock()
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("leaver: %v", err)
	}
	q.mu.Lock()
	if n := len(q.waiters); n != 1 {
		q.mu.Unlock()
		t.Fatalf("%d waiters after one left, want 1", n)
	}
	after := q.waiters[0].grantAt
	q.mu.Unlock()
	if !after.Before(before) {
		t.Errorf("the second waiter's slot stayed at %v, want it moved up from there", after.Sub(before))
	}
	if g := <-out; g.err != nil {
		t.Fatal(g.err)
	}
}
