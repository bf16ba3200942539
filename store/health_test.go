package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// refuseWrites makes r answer PING but refuse every write, as a Redis out
// of memory with maxmemory-policy noeviction does; on false it accepts
// writes again.
func refuseWrites(t *testing.T, r *testkit.Redis, on bool) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	ctx := context.Background()
	mem := "0"
	if on {
		mem = "1"
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", mem).Err(); err != nil {
		t.Fatal(err)
	}
	if on {
		if err := rdb.Set(ctx, "probe-the-oom", "x", time.Second).Err(); err == nil {
			t.Fatal("redis accepts writes with maxmemory 1 and noeviction")
		}
	}
}

// offerFor calls q.Wait every few milliseconds for d, as a busy route does.
func offerFor(q *ratelimit.Quota, d time.Duration) {
	ctx := context.Background()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		_, _ = q.WaitPriority(ctx, 0)
	}
}

// A store that answers PING but refuses writes (out of memory with
// noeviction) is of no use: it stays in fallback, one state change, not
// one every probe (the PING probe flapped ok ↔ fallback, 21 events in 4 s).
// Once it takes writes again it is back to ok.
func TestStoreRefusingWritesStaysFallback(t *testing.T) {
	r := testkit.StartRedis(t)
	rec := &recorder{}
	c := newClient(t, r.URL, "t20:", rec)
	q := store.NewQuota(c, "api", quotaCfg("1000/1s", 1000, time.Second), nil)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	refuseWrites(t, r, true)
	offerFor(q, 4*time.Second)
	got := rec.seen()
	t.Logf("state changes in 4s of a store refusing writes: %d %v", len(got), got)
	if len(got) == 0 || len(got) > 4 {
		t.Errorf("%d state changes in 4s, want 1 to 4 (fallback and staying there)", len(got))
	}
	if st, reason := c.State(); st != "fallback" || reason == "" {
		t.Errorf("state %q (%q) after 4s of refused writes, want fallback with the reason", st, reason)
	}
	refuseWrites(t, r, false)
	testkit.WaitFor(t, 5*time.Second, "the store to be ok once it takes writes", func() bool { st, _ := c.State(); return st == "ok" })
}

// A store that refuses writes now and then changes state at most once a
// second: it returns to ok no sooner than a second after it fell back.
func TestStoreStateChangesAtMostOncePerSecond(t *testing.T) {
	r := testkit.StartRedis(t)
	rec := &recorder{}
	c := newClient(t, r.URL, "t21:", rec)
	q := store.NewQuota(c, "api", quotaCfg("1000/1s", 1000, time.Second), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		offerFor(q, 4*time.Second)
	}()
	for on := true; ; on = !on {
		select {
		case <-done:
			refuseWrites(t, r, false)
			got := rec.seen()
			rec.mu.Lock()
			at := append([]time.Time(nil), rec.at...)
			rec.mu.Unlock()
			t.Logf("state changes in 4s of a store refusing writes every other 150ms: %d %v", len(got), got)
			for i := 1; i < len(got); i++ {
				if gap := at[i].Sub(at[i-1]); got[i] == "ok" && gap < 900*time.Millisecond {
					t.Errorf("change %d: ok %s after the fallback, want at least 1s in fallback", i, gap.Round(time.Millisecond))
				}
			}
			if len(got) > 9 {
				t.Errorf("%d state changes in 4s, want at most 9", len(got))
			}
			return
		case <-time.After(150 * time.Millisecond):
			refuseWrites(t, r, on)
		}
	}
}
