package observe

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one entry of the admin /events stream.
type Event struct {
	// ID increases by one per event published, so a reader can tell order
	// and gaps.
	ID uint64 `json:"id"`
	// Type is breaker, reload, quota_exhausted, quota_paused,
	// budget_exhausted, upstream_health or upstream_mode.
	Type string         `json:"type"`
	Time time.Time      `json:"time"`
	Data map[string]any `json:"data"`
}

// Message is an event as a subscriber receives it: already encoded, so
// that Publish encodes once however many subscribers there are.
type Message struct {
	ID   uint64
	Type string
	JSON []byte // the Event, JSON-encoded
}

// Hub fans events out to /events subscribers. Publish never blocks: a
// subscriber whose buffer is full misses the event, and the miss is
// counted (in total and per subscriber), so a slow dashboard can never
// stall the data path — breaker transitions are published from request
// goroutines. A nil *Hub publishes nothing.
type Hub struct {
	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	seq     uint64
	n       atomic.Int32 // len(subs), read without the lock
	dropped atomic.Uint64
	// limits floods of one kind (quota and budget events can fire per
	// request): at most one event per key per interval. Keys are built
	// from config names, so the map stays small.
	last sync.Map // key → unix nanos
}

// Subscription is one subscriber's feed.
type Subscription struct {
	// C delivers events in publication order, with gaps where the
	// subscriber was too slow.
	C       <-chan Message
	c       chan Message
	hub     *Hub
	dropped atomic.Uint64
	once    sync.Once
}

// NewHub returns a hub with no subscribers.
func NewHub() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscribe starts a feed holding up to buffer undelivered events; Close
// ends it.
func (h *Hub) Subscribe(buffer int) *Subscription {
	c := make(chan Message, max(buffer, 1))
	s := &Subscription{C: c, c: c, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	h.mu.Unlock()
	return s
}

// Close unsubscribes; C is not closed, so a reader never mistakes the end
// for an event.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		delete(h.subs, s)
		h.n.Store(int32(len(h.subs)))
		h.mu.Unlock()
	})
}

// Dropped counts the events this subscriber missed because its buffer was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Dropped counts events not delivered to slow subscribers, over all of them.
func (h *Hub) Dropped() uint64 {
	if h == nil {
		return 0
	}
	return h.dropped.Load()
}

// Publish sends an event to every subscriber that has room.
func (h *Hub) Publish(typ string, data map[string]any) {
	if h == nil || h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	h.seq++
	ev := Event{ID: h.seq, Type: typ, Time: time.Now().UTC(), Data: data}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	m := Message{ID: ev.ID, Type: typ, JSON: b}
	for s := range h.subs {
		select {
		case s.c <- m:
		default:
			s.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// publishThrottled publishes at most one event per key per interval.
func (h *Hub) publishThrottled(key string, every time.Duration, typ string, data func() map[string]any) {
	if h == nil || h.n.Load() == 0 {
		return
	}
	now := time.Now().UnixNano()
	if v, ok := h.last.Load(key); ok && now-v.(int64) < int64(every) {
		return
	}
	h.last.Store(key, now)
	h.Publish(typ, data())
}
