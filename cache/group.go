package cache

import (
	"context"
	"sync"
)

// Group coalesces concurrent misses: while one request for a key is in
// flight upstream (its leader), later requests for the same key wait for
// its response instead of sending their own (SPEC: "Cache misses
// coalesce"). Unlike x/sync/singleflight, the leader does not wait inside
// the Group: it gets a Flight, streams its response to its own client, and
// completes the Flight whenever it knows the outcome. See the package doc
// for the protocol.
//
// The zero Group is ready to use and lets nobody wait: every caller but a
// key's leader goes upstream alone. A Group starts no goroutines.
type Group struct {
	maxWaiters int

	mu      sync.Mutex
	flights map[string]*Flight
}

// NewGroup returns a Group that lets at most maxWaiters callers wait on each
// key's leader; callers past that go upstream alone. 0 lets nobody wait;
// a negative maxWaiters sets no bound.
func NewGroup(maxWaiters int) *Group {
	return &Group{maxWaiters: maxWaiters, flights: make(map[string]*Flight)}
}

// Flight is one leader's upstream request for a key, which waiters share.
type Flight struct {
	g    *Group
	key  string
	done chan struct{} // closed by the first Done

	// Guarded by g.mu.
	finished bool
	waiters  int

	// entry is written once before done is closed, and read by waiters
	// only after it is: the close orders the two.
	entry *Entry
}

// Join makes the caller the leader of key, or a waiter on its leader.
//
//   - Leader: no flight for key was in progress. Join returns a new Flight
//     at once; the caller goes upstream and must call Flight.Done (defer
//     flight.Done(nil) first, so that every path, a panic included, releases
//     the waiters). Nothing a waiter does ever delays the leader.
//   - Waiter: Join waits until the leader calls Done, then returns the
//     leader's entry with ok true, or ok false when the leader had nothing
//     to share.
//   - Alone: ok false and a nil Flight at once when key already has
//     maxWaiters waiters or ctx is already done, and as soon as ctx ends
//     while waiting.
//
// On ok false with a nil Flight the caller goes upstream on its own; it may
// still store the response it gets. The shared entry is immutable (see
// Entry). Only requests that could fill the entry should Join: Rules must
// have said lookup and store, so that a HEAD, a Range request or a request
// bypassing the lookup neither leads nor takes someone else's answer.
func (g *Group) Join(ctx context.Context, key string) (f *Flight, shared *Entry, ok bool) {
	if ctx.Err() != nil {
		// A caller whose client is gone must not lead: its request would
		// fail at once and send every waiter upstream on its own.
		return nil, nil, false
	}
	g.mu.Lock()
	f = g.flights[key]
	if f == nil {
		if g.flights == nil {
			g.flights = make(map[string]*Flight)
		}
		f = &Flight{g: g, key: key, done: make(chan struct{})}
		g.flights[key] = f
		g.mu.Unlock()
		return f, nil, false
	}
	if g.maxWaiters >= 0 && f.waiters >= g.maxWaiters {
		g.mu.Unlock()
		return nil, nil, false
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return nil, f.entry, f.entry != nil
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		g.mu.Unlock()
		return nil, nil, false
	}
}

// Done completes the flight: waiters get e, or go upstream on their own
// when e is nil (not storable, too big, an error, the leader's client gone).
// Only the first call counts; later ones do nothing, so a deferred
// Done(nil) is safe after an earlier Done(e). Done never blocks.
//
// Store e before calling Done: the key is free for a new leader from the
// moment Done returns, and a request that misses the store in between would
// become one. e must not be changed afterwards. A nil *Flight does nothing.
func (f *Flight) Done(e *Entry) {
	if f == nil {
		return
	}
	g := f.g
	g.mu.Lock()
	if f.finished {
		g.mu.Unlock()
		return
	}
	f.finished = true
	f.entry = e
	// Only an unfinished flight is in the map, so this is f's own slot,
	// never a newer flight's for the same key.
	delete(g.flights, f.key)
	g.mu.Unlock()
	close(f.done)
}

// Do runs fn once per key among concurrent callers, for a caller whose
// whole upstream exchange, body included, fits in fn. The first caller for
// key (leader true) runs fn and gets its entry; shared is false. Concurrent
// callers wait as in Join and get (entry, true, false), or (nil, false,
// false) when they must go upstream on their own: past the waiter bound,
// when ctx ends, or when fn returned nil. The waiters are released only when
// fn returns, so a streaming proxy should use Join and Done instead, which
// release them at response headers when the response cannot be shared.
//
// If fn panics, the waiters are told to go on their own and the panic
// continues (httputil.ReverseProxy panics with http.ErrAbortHandler when
// the client goes away mid-body).
func (g *Group) Do(ctx context.Context, key string, fn func() *Entry) (e *Entry, shared bool, leader bool) {
	f, e, ok := g.Join(ctx, key)
	if f == nil {
		return e, ok, false
	}
	defer f.Done(nil) // on panic; a no-op after the Done below
	e = fn()
	f.Done(e)
	return e, false, true
}
