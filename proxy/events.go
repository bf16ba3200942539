package proxy

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one entry of the admin /events stream.
type Event struct {
	Type string         `json:"type"` // breaker, reload, quota_exhausted, quota_paused, budget_exhausted
	Time time.Time      `json:"time"`
	Data map[string]any `json:"data"`
}

// Hub fans events out to /events subscribers. Publish never blocks: a
// subscriber whose buffer is full misses the event, and the miss is
// counted, so a slow dashboard can never stall the data path.
type Hub struct {
	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	dropped atomic.Uint64
	// limits floods of one kind (quota and budget events can fire per
	// request): at most one event per key per interval.
	last sync.Map // key → unix nanos
}

// NewHub returns a hub with no subscribers.
func NewHub() *Hub { return &Hub{subs: map[chan []byte]struct{}{}} }

// Subscribe returns a channel of JSON-encoded events and a cancel func.
func (h *Hub) Subscribe(buffer int) (<-chan []byte, func()) {
	ch := make(chan []byte, buffer)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// Dropped counts events not delivered to a slow subscriber.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// Publish sends an event to every subscriber that has room.
func (h *Hub) Publish(typ string, data map[string]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	b, err := json.Marshal(Event{Type: typ, Time: time.Now().UTC(), Data: data})
	if err != nil {
		return
	}
	for ch := range h.subs {
		select {
		case ch <- b:
		default:
			h.dropped.Add(1)
		}
	}
}

// publishThrottled publishes at most one event per key per interval.
func (h *Hub) publishThrottled(key string, every time.Duration, typ string, data map[string]any) {
	now := time.Now().UnixNano()
	if v, ok := h.last.Load(key); ok && now-v.(int64) < int64(every) {
		return
	}
	h.last.Store(key, now)
	h.Publish(typ, data)
}
