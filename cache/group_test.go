package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// waiters is how many callers wait on key's flight now.
func (g *Group) waitersOn(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.flights[key]; f != nil {
		return f.waiters
	}
	return -1
}

func (g *Group) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.flights)
}

// joinAlone checks that Join on key returns at once, telling the caller to
// go upstream on its own. If it waits instead, the test fails promptly and
// the leader is released, rather than the test hanging.
func joinAlone(t *testing.T, g *Group, leader *Flight, key string) {
	t.Helper()
	got := make(chan result, 1)
	go func() {
		f, e, ok := g.Join(context.Background(), key)
		got <- result{e, ok, f != nil}
	}()
	select {
	case r := <-got:
		if r.e != nil || r.shared || r.leader {
			t.Fatalf("Join = %+v, want to go on its own", r)
		}
	case <-time.After(5 * time.Second):
		leader.Done(nil)
		t.Fatal("Join waits; it should have returned at once")
	}
}

type result struct {
	e              *Entry
	shared, leader bool
}

func TestGroupDoCoalescesFiftyCallers(t *testing.T) {
	testkit.CheckLeaks(t)
	const callers = 50
	g := NewGroup(100)
	entry := &Entry{Status: 200, Body: []byte("shared")}
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func() *Entry {
		calls.Add(1)
		<-release
		return entry
	}

	results := make(chan result, callers)
	for range callers {
		go func() {
			e, shared, leader := g.Do(context.Background(), "k", fn)
			results <- result{e, shared, leader}
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "49 waiters", func() bool { return g.waitersOn("k") == callers-1 })
	close(release)

	var leaders, shared int
	for range callers {
		r := <-results
		if r.e != entry {
			t.Fatalf("caller got entry %p, want the leader's %p", r.e, entry)
		}
		if r.leader {
			leaders++
		}
		if r.shared {
			shared++
		}
	}
	if calls.Load() != 1 || leaders != 1 || shared != callers-1 {
		t.Fatalf("fn ran %d times, %d leaders, %d shared; want 1, 1, %d", calls.Load(), leaders, shared, callers-1)
	}
	if g.inFlight() != 0 {
		t.Fatal("flight not removed after Done")
	}
}

func TestGroupWaiterBound(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(3)
	ctx := context.Background()
	leader, _, _ := g.Join(ctx, "k")
	if leader == nil {
		t.Fatal("first caller did not lead")
	}
	results := make(chan result, 3)
	for range 3 {
		go func() {
			f, e, ok := g.Join(ctx, "k")
			results <- result{e, ok, f != nil}
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "3 waiters", func() bool { return g.waitersOn("k") == 3 })

	// The fourth is past the bound: told at once to go on its own.
	joinAlone(t, g, leader, "k")
	// Other keys have their own bound and their own leader.
	other, _, _ := g.Join(ctx, "other")
	if other == nil {
		t.Fatal("another key did not get its own leader")
	}
	other.Done(nil)

	entry := &Entry{Status: 200}
	leader.Done(entry)
	for range 3 {
		if r := <-results; r.e != entry || !r.shared || r.leader {
			t.Fatalf("waiter got %+v", r)
		}
	}
}

func TestGroupZeroValueLetsNobodyWait(t *testing.T) {
	testkit.CheckLeaks(t)
	var g Group
	f, _, _ := g.Join(context.Background(), "k")
	if f == nil {
		t.Fatal("the zero Group must still make a leader")
	}
	joinAlone(t, &g, f, "k")
	f.Done(nil)
}

func TestGroupUnbounded(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(-1)
	leader, _, _ := g.Join(context.Background(), "k")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, _, ok := g.Join(context.Background(), "k"); !ok {
				t.Error("waiter not served")
			}
		})
	}
	testkit.WaitFor(t, 5*time.Second, "20 waiters", func() bool { return g.waitersOn("k") == 20 })
	leader.Done(&Entry{})
	wg.Wait()
}

func TestGroupWaiterContextEnds(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(10)
	leader, _, _ := g.Join(context.Background(), "k")
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan result, 1)
	go func() {
		f, e, ok := g.Join(ctx, "k")
		got <- result{e, ok, f != nil}
	}()
	testkit.WaitFor(t, 5*time.Second, "the waiter", func() bool { return g.waitersOn("k") == 1 })
	cancel()
	select {
	case r := <-got:
		if r.e != nil || r.shared || r.leader {
			t.Fatalf("cancelled waiter got %+v, want to go on its own", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled waiter still waiting")
	}
	if n := g.waitersOn("k"); n != 0 {
		t.Fatalf("%d waiters counted after the cancel, want 0", n)
	}

	// A caller whose ctx is already over neither waits nor leads.
	if f, _, ok := g.Join(ctx, "k"); f != nil || ok {
		t.Fatal("cancelled caller joined")
	}
	if f, _, ok := g.Join(ctx, "fresh"); f != nil || ok || g.inFlight() != 1 {
		t.Fatal("cancelled caller became a leader")
	}

	// A deadline works the same way.
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer dcancel()
	start := time.Now()
	if f, _, ok := g.Join(dctx, "k"); f != nil || ok {
		t.Fatal("waiter past its deadline was served")
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("waiter returned %v after its 20ms deadline", waited)
	}
	leader.Done(nil)
}

func TestGroupLeaderWithNothingToShare(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(10)
	release := make(chan struct{})
	leaderDone := make(chan result, 1)
	go func() {
		e, shared, leader := g.Do(context.Background(), "k", func() *Entry { <-release; return nil })
		leaderDone <- result{e, shared, leader}
	}()
	testkit.WaitFor(t, 5*time.Second, "the leader", func() bool { return g.waitersOn("k") == 0 })

	results := make(chan result, 5)
	for range 5 {
		go func() {
			e, shared, leader := g.Do(context.Background(), "k", func() *Entry {
				t.Error("a waiter ran fn")
				return nil
			})
			results <- result{e, shared, leader}
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "5 waiters", func() bool { return g.waitersOn("k") == 5 })
	close(release)
	if r := <-leaderDone; r.e != nil || r.shared || !r.leader {
		t.Fatalf("leader got %+v", r)
	}
	for range 5 {
		if r := <-results; r.e != nil || r.shared || r.leader {
			t.Fatalf("waiter got %+v, want (nil, false, false)", r)
		}
	}
}

func TestGroupLeaderPanicReleasesWaiters(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(10)
	release := make(chan struct{})
	recovered := make(chan any, 1)
	go func() {
		defer func() { recovered <- recover() }()
		g.Do(context.Background(), "k", func() *Entry { <-release; panic("client gone") })
	}()
	testkit.WaitFor(t, 5*time.Second, "the leader", func() bool { return g.waitersOn("k") == 0 })
	got := make(chan result, 1)
	go func() {
		e, shared, leader := g.Do(context.Background(), "k", func() *Entry { return nil })
		got <- result{e, shared, leader}
	}()
	testkit.WaitFor(t, 5*time.Second, "the waiter", func() bool { return g.waitersOn("k") == 1 })
	close(release)
	if p := <-recovered; p != "client gone" {
		t.Fatalf("panic %v was not passed on", p)
	}
	select {
	case r := <-got:
		if r.e != nil || r.shared || r.leader {
			t.Fatalf("waiter got %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter stuck after the leader panicked")
	}
}

func TestFlightDone(t *testing.T) {
	testkit.CheckLeaks(t)
	g := NewGroup(10)
	ctx := context.Background()
	first, _, _ := g.Join(ctx, "k")
	got := make(chan *Entry, 1)
	go func() { _, e, _ := g.Join(ctx, "k"); got <- e }()
	testkit.WaitFor(t, 5*time.Second, "the waiter", func() bool { return g.waitersOn("k") == 1 })

	entry := &Entry{Status: 200}
	first.Done(entry)
	first.Done(nil) // the deferred safety net: must change nothing
	if e := <-got; e != entry {
		t.Fatalf("waiter got %p, want %p", e, entry)
	}

	// The key is free again: the next caller leads a new flight, which a
	// late Done on the old one must not remove.
	second, _, _ := g.Join(ctx, "k")
	if second == nil || second == first {
		t.Fatal("no new leader after Done")
	}
	first.Done(nil)
	if g.waitersOn("k") != 0 {
		t.Fatal("an old flight's Done removed the new flight")
	}
	second.Done(nil)
	(*Flight)(nil).Done(nil) // documented no-op
	if g.inFlight() != 0 {
		t.Fatal("flights left behind")
	}
}
