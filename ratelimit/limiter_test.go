package ratelimit

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

var fivePerSecond = config.Rate{N: 5, Period: time.Second}

func TestLimiterBurstThenRejects(t *testing.T) {
	clock := newFakeClock()
	l := oneWindow(fivePerSecond, 5, clock.Now, DefaultMaxKeys, DefaultIdleTTL)

	for i := range 10 {
		d := l.Take("10.0.0.1", 0)
		h := http.Header{}
		SetHeaders(h, "route", fivePerSecond, 5, d)
		if got, want := h.Get("RateLimit-Policy"), `"route";q=5;w=1`; got != want {
			t.Errorf("take %d: RateLimit-Policy = %q, want %q", i, got, want)
		}
		if i < 5 {
			if !d.Allowed || d.Wait != 0 || d.RetryAfter != 0 {
				t.Fatalf("take %d: got %+v, want allowed at once", i, d)
			}
			if d.Remaining != 4-i {
				t.Errorf("take %d: Remaining = %d, want %d", i, d.Remaining, 4-i)
			}
			if want := time.Duration(i+1) * 200 * time.Millisecond; !near(d.Reset, want, time.Millisecond) {
				t.Errorf("take %d: Reset = %v, want %v", i, d.Reset, want)
			}
			if got, want := h.Get("RateLimit"), fmt.Sprintf(`"route";r=%d;t=1`, 4-i); got != want {
				t.Errorf("take %d: RateLimit = %q, want %q", i, got, want)
			}
			if got := h.Get("Retry-After"); got != "" {
				t.Errorf("take %d: allowed response has Retry-After %q", i, got)
			}
			continue
		}
		if d.Allowed {
			t.Fatalf("take %d: allowed, want rejected (%+v)", i, d)
		}
		if !near(d.RetryAfter, 200*time.Millisecond, time.Millisecond) {
			t.Errorf("take %d: RetryAfter = %v, want ≈200ms", i, d.RetryAfter)
		}
		if d.Remaining != 0 {
			t.Errorf("take %d: Remaining = %d, want 0", i, d.Remaining)
		}
		if got, want := h.Get("RateLimit"), `"route";r=0;t=1`; got != want {
			t.Errorf("take %d: RateLimit = %q, want %q", i, got, want)
		}
		if got := h.Get("Retry-After"); got != "1" {
			t.Errorf("take %d: Retry-After = %q, want 1", i, got)
		}
	}
	if got := l.Rejected(); got != 5 {
		t.Errorf("Rejected() = %d, want 5", got)
	}

	// A rejection spends nothing: 200ms later exactly one token is back.
	clock.Advance(200 * time.Millisecond)
	if d := l.Take("10.0.0.1", 0); !d.Allowed {
		t.Fatalf("after 200ms: %+v, want allowed", d)
	}
	if d := l.Take("10.0.0.1", 0); d.Allowed {
		t.Fatalf("second take after 200ms: %+v, want rejected", d)
	}
	// A full second refills the whole burst, no more.
	clock.Advance(10 * time.Second)
	allowed := 0
	for range 10 {
		if l.Take("10.0.0.1", 0).Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("after a long pause %d takes allowed, want the burst of 5", allowed)
	}
}

func TestLimiterKeysAreIsolated(t *testing.T) {
	clock := newFakeClock()
	l := oneWindow(fivePerSecond, 5, clock.Now, DefaultMaxKeys, DefaultIdleTTL)
	for _, key := range []string{"a", "b", ""} {
		for i := range 5 {
			if d := l.Take(key, 0); !d.Allowed {
				t.Fatalf("key %q take %d rejected: each key has its own burst", key, i)
			}
		}
	}
	for _, key := range []string{"a", "b", ""} {
		if d := l.Take(key, 0); d.Allowed {
			t.Errorf("key %q: sixth take allowed", key)
		}
	}
	if got := l.Keys(); got != 3 {
		t.Errorf("Keys() = %d, want 3", got)
	}
}

func TestLimiterMaxWaitReservesAToken(t *testing.T) {
	clock := newFakeClock()
	l := oneWindow(fivePerSecond, 1, clock.Now, DefaultMaxKeys, DefaultIdleTTL)

	if d := l.Take("k", 500*time.Millisecond); !d.Allowed || d.Wait != 0 {
		t.Fatalf("first take: %+v, want allowed at once", d)
	}
	for i, want := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
		d := l.Take("k", 500*time.Millisecond)
		if !d.Allowed || !near(d.Wait, want, time.Millisecond) {
			t.Fatalf("waiting take %d: %+v, want allowed with Wait ≈ %v", i, d, want)
		}
		if d.Remaining != 0 || d.RetryAfter != 0 {
			t.Errorf("waiting take %d: %+v, want Remaining 0 and no RetryAfter", i, d)
		}
		h := http.Header{}
		SetHeaders(h, "r", fivePerSecond, 1, d)
		if h.Get("Retry-After") != "" {
			t.Errorf("waiting take %d: allowed response has Retry-After", i)
		}
	}
	// The next token is 600ms away: over maxWait, so rejected, and nothing
	// is reserved by the rejection.
	d := l.Take("k", 500*time.Millisecond)
	if d.Allowed || !near(d.RetryAfter, 600*time.Millisecond, time.Millisecond) {
		t.Fatalf("over maxWait: %+v, want rejected with RetryAfter ≈ 600ms", d)
	}
	if d := l.Take("k", time.Second); !d.Allowed || !near(d.Wait, 600*time.Millisecond, time.Millisecond) {
		t.Fatalf("after rejection: %+v, want Wait ≈ 600ms (the rejection spent nothing)", d)
	}
	// maxWait 0 means reject at once, however near the token is.
	clock.Advance(799 * time.Millisecond)
	if d := l.Take("k", 0); d.Allowed {
		t.Fatalf("maxWait 0 with the token 1ms away: %+v, want rejected", d)
	}
}

func TestLimiterZeroRateIsNoLimit(t *testing.T) {
	l := NewLimiter(nil)
	for range 1000 {
		if d := l.Take("k", 0); !d.Allowed {
			t.Fatalf("zero rate rejected: %+v", d)
		}
	}
	if l.Keys() != 0 {
		t.Errorf("Keys() = %d, want 0: an unlimited limiter tracks nothing", l.Keys())
	}
	h := http.Header{}
	SetHeaders(h, "r", config.Rate{}, 0, Decision{Allowed: true})
	if len(h) != 0 {
		t.Errorf("zero policy wrote headers: %v", h)
	}
}

func TestLimiterEvictsLeastRecentlyUsed(t *testing.T) {
	clock := newFakeClock()
	l := oneWindow(config.Rate{N: 1, Period: time.Hour}, 1, clock.Now, 3, DefaultIdleTTL)
	for _, k := range []string{"a", "b", "c"} {
		l.Take(k, 0) // each bucket is now empty for an hour
	}
	l.Take("a", 0) // a is now the most recently used; b the least
	if d := l.Take("d", 0); !d.Allowed {
		t.Fatalf("new key d rejected")
	}
	if got := l.Keys(); got != 3 {
		t.Fatalf("Keys() = %d, want the cap of 3", got)
	}
	// b was forgotten, so it starts afresh; a and c were kept, still empty.
	if d := l.Take("b", 0); !d.Allowed {
		t.Errorf("b was not the one evicted")
	}
	if d := l.Take("a", 0); d.Allowed {
		t.Errorf("a was evicted, though recently used")
	}
}

func TestLimiterForgetsIdleFullKeys(t *testing.T) {
	clock := newFakeClock()
	slow := config.Rate{N: 1, Period: time.Minute}
	// A small cap means one shard: every Take sweeps where the idle keys are.
	l := oneWindow(slow, 5, clock.Now, 1000, 10*time.Second)

	for i := range 20 {
		l.Take(fmt.Sprint("client-", i), 0) // each bucket: 4 of 5, full again in 1m
	}
	clock.Advance(11 * time.Second)
	for range 20 {
		l.Take("busy", 0)
	}
	// Idle past the TTL, but not yet full: forgetting them would hand out
	// tokens, so they are kept.
	if got := l.Keys(); got != 21 {
		t.Fatalf("Keys() = %d after 11s, want 21 (idle but not full keys are kept)", got)
	}
	clock.Advance(time.Minute)
	for range 20 {
		l.Take("busy", 0)
	}
	if got := l.Keys(); got != 1 {
		t.Errorf("Keys() = %d once idle and full, want 1", got)
	}
	if d := l.Take("client-3", 0); !d.Allowed || d.Remaining != 4 {
		t.Errorf("forgotten key came back with %+v, want a full bucket", d)
	}
}

func TestLimiterKeyFloodIsBounded(t *testing.T) {
	const keys = 150_000
	const maxGrowth = 40 << 20 // bytes; measured ≈ 25 MiB for 100 000 keys

	before := heapAfterGC()
	// The clock stands still: no key is idle long enough to be dropped, so
	// only the cap keeps the count down.
	l := oneWindow(config.Rate{N: 10, Period: time.Second}, 20, newFakeClock().Now, DefaultMaxKeys, DefaultIdleTTL)
	// No collections during the flood (each of them scans every key so
	// far); the heap is measured after one either way.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var key []byte
	for i := range keys {
		// "10.a.b.c", written without fmt: formatting was half the test's time.
		key = append(key[:0], "10."...)
		key = strconv.AppendInt(key, int64(i>>16&0xff), 10)
		key = append(key, '.')
		key = strconv.AppendInt(key, int64(i>>8&0xff), 10)
		key = append(key, '.')
		key = strconv.AppendInt(key, int64(i&0xff), 10)
		l.Take(string(key), 0)
	}
	after := heapAfterGC()
	if got := l.Keys(); got > DefaultMaxKeys || got < DefaultMaxKeys*9/10 {
		t.Errorf("Keys() = %d after %d distinct keys, want at most the cap %d (and near it)", got, keys, DefaultMaxKeys)
	}
	growth := int64(after) - int64(before)
	t.Logf("%d keys tracked, heap grew %.1f MiB (%d B/key)", l.Keys(), float64(growth)/(1<<20), growth/int64(l.Keys()))
	if growth > maxGrowth {
		t.Errorf("heap grew %d MiB, want < %d MiB", growth>>20, maxGrowth>>20)
	}
	runtime.KeepAlive(l)
}

func TestLimiterLongKeysAreBounded(t *testing.T) {
	const keys = 2000
	before := heapAfterGC()
	l := oneWindow(fivePerSecond, 5, newFakeClock().Now, DefaultMaxKeys, DefaultIdleTTL)
	long := strings.Repeat("x", 16<<10)
	for i := range keys {
		l.Take(fmt.Sprint(i, long), 0)
	}
	after := heapAfterGC()
	// 2000 keys of 16 KiB would be 31 MiB if kept whole.
	if growth := int64(after) - int64(before); growth > 4<<20 {
		t.Errorf("heap grew %d KiB for %d long keys, want them digested", growth>>10, keys)
	}
	// The same long key still maps to the same bucket.
	k := "7" + long
	for range 4 {
		l.Take(k, 0)
	}
	if d := l.Take(k, 0); d.Allowed {
		t.Errorf("a long key's sixth take was allowed: digest is not stable")
	}
	runtime.KeepAlive(l)
}

func TestLimiterConcurrentTakesNeverOverspend(t *testing.T) {
	clock := newFakeClock() // frozen: exactly the burst may be taken
	l := oneWindow(config.Rate{N: 1, Period: time.Hour}, 50, clock.Now, DefaultMaxKeys, DefaultIdleTTL)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if l.Take("shared", 0).Allowed {
					allowed.Add(1)
				}
				l.Take(fmt.Sprint(g, "-", i), 0)
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 50 {
		t.Errorf("%d takes allowed on one key, want exactly the burst of 50", got)
	}
	if got, want := l.Rejected(), uint64(800-50); got != want {
		t.Errorf("Rejected() = %d, want %d", got, want)
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func BenchmarkLimiterTakeExistingKey(b *testing.B) {
	// A rate that never limits: the cost of the limiter itself on a route.
	l := oneWindow(config.Rate{N: 1_000_000_000, Period: time.Second}, 1_000_000, time.Now, DefaultMaxKeys, DefaultIdleTTL)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("192.168.%d.%d", i>>8, i&0xff)
		l.Take(keys[i], 0)
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(97))
		for pb.Next() {
			if !l.Take(keys[i%len(keys)], 0).Allowed {
				b.Fatal("rejected")
			}
			i++
		}
	})
}

func BenchmarkLimiterTakeOneKey(b *testing.B) {
	l := oneWindow(config.Rate{N: 1_000_000_000, Period: time.Second}, 1_000_000, time.Now, DefaultMaxKeys, DefaultIdleTTL)
	b.ReportAllocs()
	for b.Loop() {
		l.Take("10.1.2.3", 0)
	}
}

// oneWindow is a Limiter of one window: rate with bursts of burst.
func oneWindow(rate config.Rate, burst int, now func() time.Time, maxKeys int, idleTTL time.Duration) *Limiter {
	return newLimiter([]config.Window{{Rate: rate, Burst: burst}}, now, maxKeys, idleTTL)
}
