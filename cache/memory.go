package cache

import (
	"container/list"
	"sync"
)

// Store is where entries live. The in-process Memory store implements it; a
// shared store (Redis) may later. Implementations are safe for concurrent
// use, and return stored entries without copying them (see Entry).
type Store interface {
	// Get returns the entry stored under key, whatever its age; the
	// caller judges it with Policy.Freshness.
	Get(key string) (*Entry, bool)
	// Set stores e under key, replacing any entry there, and may evict
	// others to make room. An entry too large for the store is not
	// stored, and the entry it would have replaced is removed, since it is
	// superseded. A nil e removes key.
	Set(key string, e *Entry)
	// Purge drops every entry.
	Purge()
	// Stats describes the store now.
	Stats() Stats
}

// Stats describes a Store at one moment.
type Stats struct {
	// Entries is the number of entries held.
	Entries int
	// Bytes is the sum of what they cost: Entry.Size plus the key length.
	Bytes int64
	// Evictions counts entries dropped to make room for others since the
	// store was made; replacements, removals and Purge are not evictions.
	Evictions uint64
}

// Memory is an in-process Store bounded by bytes: when storing an entry
// would take Bytes over the maximum, the least recently used entries are
// evicted until it fits. Get counts as use. An entry costs Entry.Size plus
// the length of its key.
//
// Use NewMemory; the zero Memory is an empty store with a maximum of 0 bytes,
// which stores nothing.
type Memory struct {
	max int64

	// One mutex, not a RWMutex or shards: every Get reorders the LRU list,
	// so reads write too, and eviction must see the whole store to be
	// exactly least-recently-used. The critical sections are a map lookup
	// and a few pointer swaps, so a hit stays far below a proxied request.
	mu        sync.Mutex
	items     map[string]*list.Element // values are *memoryItem
	lru       list.List                // front: most recently used
	bytes     int64
	evictions uint64
}

type memoryItem struct {
	key   string
	entry *Entry
	cost  int64
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store that holds at most maxBytes; maxBytes of
// 0 or less makes a store that holds nothing.
func NewMemory(maxBytes int64) *Memory {
	return &Memory{max: maxBytes, items: make(map[string]*list.Element)}
}

// Get returns the entry under key and marks it most recently used.
func (m *Memory) Get(key string) (*Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[key]
	if !ok {
		return nil, false
	}
	m.lru.MoveToFront(el)
	return el.Value.(*memoryItem).entry, true
}

// Set stores e under key as the most recently used entry, evicting least
// recently used ones until the store fits its maximum. An entry costing more
// than the maximum is not stored (and removes any older entry under key); a
// nil e removes key. e must not be changed afterwards.
func (m *Memory) Set(key string, e *Entry) {
	cost := int64(len(key)) + e.Size()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e == nil || cost > m.max {
		m.remove(key)
		return
	}
	if m.items == nil {
		m.items = make(map[string]*list.Element)
	}
	if el, ok := m.items[key]; ok {
		it := el.Value.(*memoryItem)
		m.bytes += cost - it.cost
		it.entry, it.cost = e, cost
		m.lru.MoveToFront(el)
	} else {
		m.items[key] = m.lru.PushFront(&memoryItem{key: key, entry: e, cost: cost})
		m.bytes += cost
	}
	// The new entry is at the front and fits on its own, so this stops
	// before reaching it.
	for m.bytes > m.max {
		oldest := m.lru.Back()
		m.removeElement(oldest)
		m.evictions++
	}
}

// Purge drops every entry; the eviction count is kept.
func (m *Memory) Purge() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.items)
	m.lru.Init()
	m.bytes = 0
}

// Stats describes the store now.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Entries: len(m.items), Bytes: m.bytes, Evictions: m.evictions}
}

// remove drops key if present; m.mu must be held.
func (m *Memory) remove(key string) {
	if el, ok := m.items[key]; ok {
		m.removeElement(el)
	}
}

// removeElement drops one element; m.mu must be held.
func (m *Memory) removeElement(el *list.Element) {
	it := m.lru.Remove(el).(*memoryItem)
	delete(m.items, it.key)
	m.bytes -= it.cost
}
