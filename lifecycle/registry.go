// Package lifecycle keeps what a config builds that outlives one config,
// and closes it once no config uses it.
//
// A reload builds a new routing table, yet much of what the old one held
// must live on: a breaker's state, a limiter's buckets, a cache, a token,
// an upstream's connection pool, a health checker, a store client, the
// tracer. Each is an item of the Registry, keyed by kind, owner name and
// settings: a reload that leaves an item's settings alone gets the same
// item back; one that changes them gets a fresh one, and the commit closes
// the one it replaced. Everything the registry starts to close runs on
// goroutines it owns, and Close waits for all of them.
package lifecycle

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// Closer is an item with something to release once no config uses it:
// goroutines, timers, connections. The registry calls Close once, on a
// goroutine of its own, so Close may wait (for a check in progress, for
// spans to flush); it should return once ctx ends, which happens when
// Registry.Close stops waiting.
type Closer interface {
	Close(ctx context.Context) error
}

// Retirer is a Closer that requests begun on an older config may still be
// using when a commit drops it: a connection pool, a store client, a
// tracer. The commit calls Retire at once and Close only once the grace
// period has passed; Registry.Close closes it at once, since nothing is
// served by then.
type Retirer interface {
	Closer
	// Retire releases what no request holds now (a pool's idle
	// connections). It must not block.
	Retire()
}

// Registry is one config's items, with the previous config's until the
// new one is committed. Use New, then Next for each config.
type Registry struct {
	mu    sync.Mutex
	prev  map[string]any // the committed config's items; nil once this one is committed
	items map[string]any
	own   *owner // shared by every generation
}

// owner is what every generation of a registry shares: the closing in
// progress, and the retired items waiting out their grace (on a timer,
// not a goroutine).
type owner struct {
	running sync.WaitGroup // closing in progress or waiting for its grace
	stop    context.Context
	abort   context.CancelFunc // Registry.Close stopped waiting: closers are to return

	mu      sync.Mutex
	waiting map[*retired]bool
	closing bool // Registry.Close was called: no more grace
}

// retired is a Retirer waiting for its grace to pass.
type retired struct {
	c     Closer
	timer *time.Timer
}

// New returns an empty registry.
func New() *Registry {
	stop, abort := context.WithCancel(context.Background())
	return &Registry{items: map[string]any{}, own: &owner{stop: stop, abort: abort, waiting: map[*retired]bool{}}}
}

// Next starts the registry of a new config: items it asks for again are
// carried over; Commit closes the rest, Discard what it built anew.
func (r *Registry) Next() *Registry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Registry{prev: r.items, items: map[string]any{}, own: r.own}
}

// Get returns the item for (kind, name, settings), building it if neither
// this config nor the previous one had it. settings must marshal to JSON:
// equal JSON is equal settings.
func Get[T any](r *Registry, kind, name string, settings any, build func() T) T {
	v, _ := TryGet(r, kind, name, settings, func() (T, error) { return build(), nil })
	return v
}

// TryGet is Get for an item whose building may fail; nothing is kept when
// it does.
func TryGet[T any](r *Registry, kind, name string, settings any, build func() (T, error)) (T, error) {
	key := kind + "\x00" + name + "\x00" + settingsKey(settings)
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.items[key]; ok {
		return v.(T), nil
	}
	if v, ok := r.prev[key]; ok {
		r.items[key] = v
		return v.(T), nil
	}
	v, err := build()
	if err != nil {
		return v, err
	}
	r.items[key] = v
	return v, nil
}

// Commit makes this config's items the registry's and closes the previous
// config's items it did not carry over: at once, or for a Retirer once
// grace has passed (the time the previous config's requests have to
// finish).
func (r *Registry) Commit(grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, v := range r.prev {
		if _, kept := r.items[key]; !kept {
			r.own.close(v, grace)
		}
	}
	r.prev = nil
}

// Discard abandons this config (its build failed): what it built anew is
// closed, what it carried over stays with the committed config.
func (r *Registry) Discard() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, v := range r.items {
		if _, carried := r.prev[key]; !carried {
			r.own.close(v, 0)
		}
	}
	r.items = map[string]any{}
}

// Close closes every item of this config, ends the grace periods of those
// that earlier commits dropped, and waits until all closing is done or ctx
// ends; then closers are told to stop (their ctx ends) and ctx's error is
// returned. Close may be called more than once; the registry is not to be
// used otherwise afterwards.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	items := r.items
	r.items = map[string]any{}
	r.mu.Unlock()
	r.own.endGraces()
	for _, v := range items {
		r.own.close(v, 0)
	}
	done := make(chan struct{})
	go func() { r.own.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		r.own.abort()
		return ctx.Err()
	}
}

// close closes v, if it is a Closer, on a goroutine the registry owns; a
// Retirer is retired now and closed after grace, or as soon as the
// registry closes.
func (o *owner) close(v any, grace time.Duration) {
	c, ok := v.(Closer)
	if !ok {
		return
	}
	o.running.Add(1)
	rt, retires := c.(Retirer)
	if !retires {
		go o.run(c)
		return
	}
	rt.Retire()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing || grace <= 0 {
		go o.run(c)
		return
	}
	w := &retired{c: c}
	o.waiting[w] = true
	w.timer = time.AfterFunc(grace, func() {
		o.mu.Lock()
		mine := o.waiting[w] // else endGraces took it
		delete(o.waiting, w)
		o.mu.Unlock()
		if mine {
			o.run(c)
		}
	})
}

// run closes c and counts it done.
func (o *owner) run(c Closer) {
	defer o.running.Done()
	_ = c.Close(o.stop)
}

// endGraces closes at once the retired items still waiting for their
// grace, and every one retired from now on.
func (o *owner) endGraces() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closing = true
	for w := range o.waiting {
		w.timer.Stop()
		go o.run(w.c)
	}
	clear(o.waiting)
}

func settingsKey(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("lifecycle: settings not serialisable: " + err.Error())
	}
	return string(b)
}
