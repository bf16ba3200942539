package policy

import (
	"encoding/json"
	"sync"
)

// Registry keeps stateful policies (breakers, bulkheads, limiters, quotas,
// caches) across reloads. Each is keyed by kind, owner name and its
// settings: a reload that leaves a route's breaker settings alone gets the
// same breaker back, with its state; one that changes them gets a fresh
// one. failsafe-go has no keyed registry of its own.
type Registry struct {
	mu    sync.Mutex
	prev  map[string]any
	items map[string]any
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{items: map[string]any{}} }

// Next starts the registry for a new config: items asked for again are
// carried over, the rest are dropped when the new config is committed.
func (r *Registry) Next() *Registry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Registry{prev: r.items, items: map[string]any{}}
}

// Get returns the item for (kind, name, settings), building it if neither
// this config nor the previous one had it.
func Get[T any](r *Registry, kind, name string, settings any, build func() T) T {
	key := kind + "\x00" + name + "\x00" + settingsKey(settings)
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.items[key]; ok {
		return v.(T)
	}
	if v, ok := r.prev[key]; ok {
		r.items[key] = v
		return v.(T)
	}
	v := build()
	r.items[key] = v
	return v
}

// Each calls fn for every item of the given kind.
func Each[T any](r *Registry, kind string, fn func(name string, v T)) {
	r.mu.Lock()
	items := make(map[string]any, len(r.items))
	for k, v := range r.items {
		items[k] = v
	}
	r.mu.Unlock()
	for k, v := range items {
		if len(k) > len(kind) && k[:len(kind)] == kind && k[len(kind)] == 0 {
			rest := k[len(kind)+1:]
			for i := 0; i < len(rest); i++ {
				if rest[i] == 0 {
					rest = rest[:i]
					break
				}
			}
			if t, ok := v.(T); ok {
				fn(rest, t)
			}
		}
	}
}

// Commit forgets the previous config's items that were not carried over.
func (r *Registry) Commit() {
	r.mu.Lock()
	r.prev = nil
	r.mu.Unlock()
}

func settingsKey(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("policy: settings not serialisable: " + err.Error())
	}
	return string(b)
}
