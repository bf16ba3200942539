package cache

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// sized returns an entry that costs exactly cost bytes under a key of
// keyLen bytes.
func sized(t testing.TB, keyLen int, cost int64) *Entry {
	t.Helper()
	body := cost - int64(keyLen) - entryOverhead
	if body < 0 {
		t.Fatalf("cost %d too small", cost)
	}
	e := &Entry{Status: 200, Body: make([]byte, body), Stored: time.Now()}
	if got := int64(keyLen) + e.Size(); got != cost {
		t.Fatalf("entry costs %d, want %d", got, cost)
	}
	return e
}

// order lists the keys from most to least recently used, without touching
// recency (which Get would).
func order(m *Memory) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for el := m.lru.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*memoryItem).key)
	}
	return keys
}

func wantOrder(t *testing.T, m *Memory, want ...string) {
	t.Helper()
	if got := order(m); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LRU order = %v, want %v", got, want)
	}
}

func wantStats(t *testing.T, m *Memory, want Stats) {
	t.Helper()
	if got := m.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestMemoryEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	m := NewMemory(600)
	a, b, c := sized(t, 1, 200), sized(t, 1, 200), sized(t, 1, 200)
	m.Set("a", a)
	m.Set("b", b)
	m.Set("c", c)
	wantOrder(t, m, "c", "b", "a")
	wantStats(t, m, Stats{Entries: 3, Bytes: 600})

	// Get counts as use: a moves ahead of b, so b is the one evicted.
	if got, ok := m.Get("a"); !ok || got != a {
		t.Fatalf("Get(a) = %p, %v; want the stored pointer %p", got, ok, a)
	}
	wantOrder(t, m, "a", "c", "b")
	m.Set("d", sized(t, 1, 200))
	wantOrder(t, m, "d", "a", "c")
	wantStats(t, m, Stats{Entries: 3, Bytes: 600, Evictions: 1})
	if _, ok := m.Get("b"); ok {
		t.Fatal("b survived; it was the least recently used")
	}

	// One large entry evicts as many as needed, oldest first.
	m.Set("e", sized(t, 1, 400))
	wantOrder(t, m, "e", "d")
	wantStats(t, m, Stats{Entries: 2, Bytes: 600, Evictions: 3})

	// Replacing re-charges the entry without evicting anything.
	m.Set("e", sized(t, 1, 300))
	wantOrder(t, m, "e", "d")
	wantStats(t, m, Stats{Entries: 2, Bytes: 500, Evictions: 3})

	// An entry of exactly the maximum fits, alone.
	m.Set("f", sized(t, 1, 600))
	wantOrder(t, m, "f")
	wantStats(t, m, Stats{Entries: 1, Bytes: 600, Evictions: 5})
}

func TestMemoryRefusesEntryLargerThanMax(t *testing.T) {
	m := NewMemory(600)
	m.Set("a", sized(t, 1, 200))
	m.Set("b", sized(t, 1, 200))

	m.Set("c", sized(t, 1, 601))
	if _, ok := m.Get("c"); ok {
		t.Fatal("an entry larger than the store was stored")
	}
	wantOrder(t, m, "b", "a")
	wantStats(t, m, Stats{Entries: 2, Bytes: 400})

	// A too-large replacement supersedes the old entry: it goes too.
	m.Set("a", sized(t, 1, 601))
	wantOrder(t, m, "b")
	wantStats(t, m, Stats{Entries: 1, Bytes: 200})

	// So does a nil one.
	m.Set("b", nil)
	wantStats(t, m, Stats{})
}

func TestMemoryPurge(t *testing.T) {
	m := NewMemory(400)
	for _, k := range []string{"a", "b", "c"} {
		m.Set(k, sized(t, 1, 200))
	}
	wantStats(t, m, Stats{Entries: 2, Bytes: 400, Evictions: 1})
	m.Purge()
	wantStats(t, m, Stats{Evictions: 1})
	for _, k := range []string{"a", "b", "c"} {
		if _, ok := m.Get(k); ok {
			t.Fatalf("%s survived Purge", k)
		}
	}
	m.Set("d", sized(t, 1, 200))
	wantStats(t, m, Stats{Entries: 1, Bytes: 200, Evictions: 1})
}

func TestMemoryZeroStoresNothing(t *testing.T) {
	for name, m := range map[string]*Memory{"zero": {}, "NewMemory(0)": NewMemory(0), "negative": NewMemory(-1)} {
		t.Run(name, func(t *testing.T) {
			m.Set("a", &Entry{Status: 200})
			if _, ok := m.Get("a"); ok {
				t.Fatal("stored with no room")
			}
			m.Purge()
			wantStats(t, m, Stats{})
		})
	}
}

func TestEntrySizeAndAge(t *testing.T) {
	e := &Entry{
		Header: http.Header{"Ab": {"cde", ""}},
		Body:   []byte("12345"),
		Stored: time.Unix(100, 0),
	}
	// "Ab: cde\r\n" is 9 bytes, "Ab: \r\n" 6.
	if got, want := e.Size(), int64(5+9+6+entryOverhead); got != want {
		t.Fatalf("Size = %d, want %d", got, want)
	}
	if got := (*Entry)(nil).Size(); got != 0 {
		t.Fatalf("nil Size = %d", got)
	}
	if got := e.Age(time.Unix(103, 0)); got != 3*time.Second {
		t.Fatalf("Age = %v, want 3s", got)
	}
	if got := e.Age(time.Unix(99, 0)); got != 0 {
		t.Fatalf("Age before Stored = %v, want 0", got)
	}
}

func TestEntryCopyHeaderKeepsEntryIntact(t *testing.T) {
	values := make([]string, 1, 4) // spare capacity: an append would write into it
	values[0] = "a"
	e := &Entry{Header: http.Header{"X-One": values}}
	dst := http.Header{"X-Other": {"kept"}, "X-One": {"replaced"}}
	e.CopyHeader(dst)
	dst.Add("X-One", "b")
	if got := e.Header["X-One"]; len(got) != 1 || got[:2][1] != "" {
		t.Fatalf("entry header changed through dst: %q (backing %q)", got, got[:2])
	}
	if got := dst["X-One"]; fmt.Sprint(got) != "[a b]" {
		t.Fatalf("dst X-One = %q", got)
	}
	if dst.Get("X-Other") != "kept" {
		t.Fatal("CopyHeader dropped an unrelated field")
	}
}

// TestMemoryConcurrent hammers one store from many goroutines; run with
// -race. The bookkeeping must add up afterwards.
func TestMemoryConcurrent(t *testing.T) {
	const max = 50_000
	m := NewMemory(max)
	entries := make([]*Entry, 64)
	for i := range entries {
		entries[i] = &Entry{Status: 200, Body: make([]byte, i*40), Header: http.Header{"K": {strconv.Itoa(i)}}}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 3000 {
				key := "k" + strconv.Itoa(r.IntN(200))
				switch n := r.IntN(100); {
				case n < 60:
					if e, ok := m.Get(key); ok && e.Status != 200 {
						t.Error("corrupt entry")
					}
				case n < 95:
					m.Set(key, entries[r.IntN(len(entries))])
				case n < 98:
					_ = m.Stats()
				default:
					if r.IntN(20) == 0 {
						m.Purge()
					} else {
						m.Set(key, nil)
					}
				}
			}
		})
	}
	wg.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	var sum int64
	for el := m.lru.Front(); el != nil; el = el.Next() {
		it := el.Value.(*memoryItem)
		if m.items[it.key] != el {
			t.Fatalf("map and list disagree on %q", it.key)
		}
		if want := int64(len(it.key)) + it.entry.Size(); it.cost != want {
			t.Fatalf("%q charged %d, costs %d", it.key, it.cost, want)
		}
		sum += it.cost
	}
	if sum != m.bytes || m.lru.Len() != len(m.items) || m.bytes > max {
		t.Fatalf("bytes %d (sum %d, max %d), list %d, map %d", m.bytes, sum, max, m.lru.Len(), len(m.items))
	}
}

func BenchmarkMemoryGet(b *testing.B) {
	const n = 1024
	m := NewMemory(1 << 30)
	keys := make([]string, n)
	body := make([]byte, 16<<10)
	for i := range keys {
		keys[i] = fmt.Sprintf("route|GET|example.com|/items/%d|", i)
		m.Set(keys[i], &Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(n)
		for pb.Next() {
			if _, ok := m.Get(keys[i%n]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}
