package lifecycle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// item is a Closer that records its closing; block, when set, holds Close
// until it is closed or Close's ctx ends.
type item struct {
	name   string
	closed atomic.Int32
	block  chan struct{}
}

func (i *item) Close(ctx context.Context) error {
	if i.block != nil {
		select {
		case <-i.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	i.closed.Add(1)
	return nil
}

// retiring is an item that requests may still use after a commit dropped it.
type retiring struct {
	item
	retired atomic.Int32
}

func (r *retiring) Retire() { r.retired.Add(1) }

type settings struct{ N int }

// waitClosed waits for it to be closed, within generous d.
func waitClosed(t *testing.T, it *item, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for it.closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s not closed within %s", it.name, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A reload that keeps an item's settings carries the same instance and
// leaves it open; one that changes them builds a new one and the commit
// closes the old; one that drops the item closes it too.
func TestCommitClosesWhatWasNotCarried(t *testing.T) {
	r := New()
	build := func(name string) func() *item { return func() *item { return &item{name: name} } }
	a := Get(r, "checker", "a", settings{1}, build("a"))
	b := Get(r, "checker", "b", settings{1}, build("b"))
	c := Get(r, "checker", "c", settings{1}, build("c"))
	r.Commit(0)

	next := r.Next()
	if got := Get(next, "checker", "a", settings{1}, build("a2")); got != a {
		t.Error("same settings: a new instance")
	}
	if got := Get(next, "checker", "b", settings{2}, build("b2")); got == b {
		t.Error("changed settings: the old instance")
	}
	// c is not asked for: dropped.
	if a.closed.Load()+b.closed.Load()+c.closed.Load() != 0 {
		t.Fatal("closed before the commit")
	}
	next.Commit(0)
	waitClosed(t, b, 5*time.Second)
	waitClosed(t, c, 5*time.Second)
	if err := next.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.closed.Load() != 1 || b.closed.Load() != 1 || c.closed.Load() != 1 {
		t.Errorf("closed a %d, b %d, c %d times; want once each", a.closed.Load(), b.closed.Load(), c.closed.Load())
	}
}

// A Retirer the commit dropped is retired at once and closed only after
// the grace; Close ends the grace early and waits for the closing.
func TestRetirerGrace(t *testing.T) {
	r := New()
	pool := Get(r, "transport", "a", settings{1}, func() *retiring { return &retiring{item: item{name: "pool"}} })
	r.Commit(0)
	next := r.Next()
	next.Commit(time.Hour)
	if pool.retired.Load() != 1 {
		t.Fatalf("retired %d times at the commit; want 1", pool.retired.Load())
	}
	time.Sleep(100 * time.Millisecond)
	if pool.closed.Load() != 0 {
		t.Fatal("closed before its grace passed")
	}
	start := time.Now()
	if err := next.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pool.closed.Load() != 1 {
		t.Errorf("Close returned with the retired pool closed %d times; want 1", pool.closed.Load())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close waited %s: the hour's grace was not cut short", took)
	}

	r = New()
	short := Get(r, "transport", "a", settings{1}, func() *retiring { return &retiring{item: item{name: "short"}} })
	r.Next().Commit(50 * time.Millisecond)
	waitClosed(t, &short.item, 5*time.Second)
}

// A failed build is discarded: what it built anew is closed, what it
// carried over stays open with the running config.
func TestDiscard(t *testing.T) {
	r := New()
	kept := Get(r, "store", "", settings{1}, func() *item { return &item{name: "kept"} })
	r.Commit(0)
	next := r.Next()
	Get(next, "store", "", settings{1}, func() *item { return &item{name: "kept2"} })
	fresh := Get(next, "checker", "x", settings{1}, func() *item { return &item{name: "fresh"} })
	if _, err := TryGet(next, "tracing", "", settings{1}, func() (*item, error) { return nil, errors.New("bad endpoint") }); err == nil {
		t.Fatal("TryGet: no error")
	}
	next.Discard()
	waitClosed(t, fresh, 5*time.Second)
	if kept.closed.Load() != 0 {
		t.Error("Discard closed an item the running config still has")
	}
	// The failed build kept nothing: the next try builds again.
	built := false
	if _, err := TryGet(r.Next(), "tracing", "", settings{1}, func() (*item, error) { built = true; return &item{}, nil }); err != nil || !built {
		t.Errorf("TryGet after a failure: built %v, err %v", built, err)
	}
}

// Close waits for a closer that takes its time, and gives up when its ctx
// ends on one that hangs; the hung closer's ctx then ends too.
func TestCloseWaitsBoundedByContext(t *testing.T) {
	r := New()
	slow := Get(r, "checker", "slow", settings{1}, func() *item { return &item{name: "slow", block: make(chan struct{})} })
	go func() { time.Sleep(200 * time.Millisecond); close(slow.block) }()
	start := time.Now()
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if slow.closed.Load() != 1 {
		t.Errorf("Close returned %s in, before the slow closer finished", time.Since(start))
	}

	r = New()
	hung := Get(r, "tracing", "", settings{1}, func() *item { return &item{name: "hung", block: make(chan struct{})} })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	err := r.Close(ctx)
	if took := time.Since(start); err == nil || took > 2*time.Second {
		t.Errorf("Close with a hung closer and a 100ms ctx: %s, err %v", took, err)
	}
	// The hung closer was told to stop: its own Close returns.
	r.own.running.Wait()
	if hung.closed.Load() != 0 {
		t.Error("the hung closer finished, though it never unblocked")
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
