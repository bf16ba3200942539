package store_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// recorder is a store.Observer that keeps what it saw.
type recorder struct {
	mu     sync.Mutex
	states []string
	at     []time.Time // when each state change was reported
	calls  map[string]int
}

func (r *recorder) StoreCall(op, result string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[op+"/"+result]++
}

func (r *recorder) StoreState(ok bool, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at = append(r.at, time.Now())
	if ok {
		r.states = append(r.states, "ok")
	} else {
		r.states = append(r.states, "fallback")
	}
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.states...)
}

// newClient is one replica's client of url; prefix separates tests.
func newClient(t *testing.T, url, prefix string, obs store.Observer) *store.Client {
	t.Helper()
	cfg := &config.Store{Redis: config.Redis{URL: url, Mode: "single", Timeout: config.Duration(200 * time.Millisecond), KeyPrefix: prefix},
		Replicas: 2, OnError: "local"}
	c, err := store.New(cfg, obs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func quotaCfg(rate string, burst int, maxWait time.Duration) config.Quota {
	r, err := config.ParseRate(rate)
	if err != nil {
		panic(err)
	}
	return config.Quota{Rate: r, Burst: burst, MaxWait: config.Duration(maxWait), HonorRetryAfter: true, MaxPause: config.Duration(time.Minute), Shared: true}
}

// Two replicas spend from one bucket: burst 2 in all, the third caller is
// refused at once with the time its token would come, nothing spent.
func TestQuotaSharedBucket(t *testing.T) {
	r := testkit.StartRedis(t)
	a := store.NewQuota(newClient(t, r.URL, "t1:", nil), "api", quotaCfg("1/1m", 2, time.Second), nil)
	b := store.NewQuota(newClient(t, r.URL, "t1:", nil), "api", quotaCfg("1/1m", 2, time.Second), nil)
	ctx := context.Background()
	if _, err := a.WaitPriority(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitPriority(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_, err := a.WaitPriority(ctx, 0)
	var ex *ratelimit.ExhaustedError
	if !errors.As(err, &ex) || ex.RetryAfter < 20*time.Second || ex.Paused {
		t.Fatalf("third Wait = %v, want quota exhausted with about 30s to wait", err)
	}
	if s := b.Snapshot(); s.Tokens >= 1 || s.Burst != 2 || s.Rate != "1/1m" {
		t.Fatalf("snapshot = %+v, want an empty shared bucket of 2", s)
	}
	// A refund on one replica is a token for the other.
	a.Refund()
	if _, err := b.WaitPriority(ctx, 0); err != nil {
		t.Fatalf("after a refund: %v", err)
	}
}

// A caller told its token is due later waits locally and is granted; waiters
// across replicas are let go one interval apart, in order, never bunched.
func TestQuotaWaitersSpread(t *testing.T) {
	r := testkit.StartRedis(t)
	cfg := quotaCfg("10/1s", 1, 10*time.Second)
	qs := []*ratelimit.Quota{
		store.NewQuota(newClient(t, r.URL, "t2:", nil), "api", cfg, nil),
		store.NewQuota(newClient(t, r.URL, "t2:", nil), "api", cfg, nil),
	}
	const n = 10
	var mu sync.Mutex
	var grants []time.Time
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := qs[i%2].WaitPriority(context.Background(), 0); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			grants = append(grants, time.Now())
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(grants) != n {
		t.Fatalf("%d grants, want %d", len(grants), n)
	}
	first, last := grants[0], grants[0]
	for _, g := range grants {
		if g.Before(first) {
			first = g
		}
		if g.After(last) {
			last = g
		}
	}
	// 10 tokens at 10/s with a burst of 1 take at least 0.9s to hand out
	// (a slower machine only spreads them more).
	if span := last.Sub(first); span < 850*time.Millisecond {
		t.Fatalf("10 grants within %s: bunched, want at least 0.9s at 10/s", span)
	}
}

// A pause set by one replica holds the other's next call.
func TestQuotaSharedPause(t *testing.T) {
	r := testkit.StartRedis(t)
	a := store.NewQuota(newClient(t, r.URL, "t3:", nil), "api", quotaCfg("100/1s", 10, 0), nil)
	b := store.NewQuota(newClient(t, r.URL, "t3:", nil), "api", quotaCfg("100/1s", 10, 0), nil)
	if got := a.Pause(30 * time.Second); got < 29*time.Second {
		t.Fatalf("Pause = %s, want 30s in force", got)
	}
	_, err := b.WaitPriority(context.Background(), 0)
	var ex *ratelimit.ExhaustedError
	if !errors.As(err, &ex) || !ex.Paused || ex.RetryAfter < 20*time.Second {
		t.Fatalf("Wait on the other replica = %v, want a paused refusal", err)
	}
	if s := b.Snapshot(); s.PausedFor < 20*time.Second {
		t.Fatalf("snapshot paused for %s, want the shared pause", s.PausedFor)
	}
}

// A dead store costs one failed call, then none: the quota falls back to a
// local bucket at rate/replicas, and is shared again once Redis is back.
func TestQuotaFallbackAndReconnect(t *testing.T) {
	r := testkit.StartRedis(t)
	rec := &recorder{}
	c := newClient(t, r.URL, "t4:", rec)
	q := store.NewQuota(c, "api", quotaCfg("2/1s", 2, 5*time.Second), nil) // fallback: 2 per 2s, burst 1
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatalf("first Wait with the store gone = %v, want a token of the local bucket", err)
	}
	if st, _ := c.State(); st != "fallback" {
		t.Fatalf("state %s, want fallback", st)
	}
	// The local share (2 per 2 s, burst 1) has no token for a second now.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var ex *ratelimit.ExhaustedError
	if _, err := q.WaitPriority(ctx, 0); !errors.As(err, &ex) {
		t.Fatalf("second Wait in fallback = %v, want the local share exhausted", err)
	}
	r.Start()
	testkit.WaitFor(t, 5*time.Second, "the store to be back", func() bool { st, _ := c.State(); return st == "ok" })
	if got := rec.seen(); len(got) != 2 || got[0] != "fallback" || got[1] != "ok" {
		t.Fatalf("state changes %v, want [fallback ok]", got)
	}
}

// A stopped (SIGSTOP) store is slow, not refused: one call waits out the
// timeout, the next ones fall back at once, and it comes back on SIGCONT.
func TestSlowStoreFallsBack(t *testing.T) {
	r := testkit.StartRedis(t)
	c := newClient(t, r.URL, "t5:", nil)
	q := store.NewQuota(c, "api", quotaCfg("100/1s", 100, 5*time.Second), nil)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	r.Pause()
	defer r.Resume()
	for range 20 {
		if _, err := q.WaitPriority(context.Background(), 0); err != nil {
			t.Fatalf("Wait with a stopped store = %v, want a local token", err)
		}
	}
	if st, reason := c.State(); st != "fallback" || reason == "" {
		t.Fatalf("state %q (%q), want fallback with a reason", st, reason)
	}
	r.Resume()
	testkit.WaitFor(t, 5*time.Second, "the store to be back", func() bool { st, _ := c.State(); return st == "ok" })
}

func window(rate string, burst int) config.Window {
	r, _ := config.ParseRate(rate)
	return config.Window{Rate: r, Burst: burst}
}

// Every window must admit; a refusal spends from none and names the window.
func TestLimiterWindows(t *testing.T) {
	r := testkit.StartRedis(t)
	ca := newClient(t, r.URL, "t6:", nil)
	a := store.NewLimiter(ca, "rl", "api", window("5/1m", 5), window("2/1h", 2))
	b := store.NewLimiter(newClient(t, r.URL, "t6:", nil), "rl", "api", window("5/1m", 5), window("2/1h", 2))
	d := a.Take("alice", 0)
	if !d.Allowed || d.Windows[0].Remaining != 4 || d.Windows[1].Remaining != 1 {
		t.Fatalf("first take = %+v", d)
	}
	if st, reason := ca.State(); st != "ok" {
		t.Fatalf("store state %s (%s) after the first take, want ok: the fallback answered", st, reason)
	}
	if d = b.Take("alice", 0); !d.Allowed {
		t.Fatalf("second take (other replica) = %+v", d)
	}
	d = a.Take("alice", 0)
	if d.Allowed || d.Window != 1 || d.RetryAfter < 20*time.Minute {
		t.Fatalf("third take = %+v, want refused by window 1 (the hour) with ~30m to wait", d)
	}
	if d.Windows[0].Remaining != 3 {
		t.Fatalf("the refused take spent from window 0: %+v", d.Windows)
	}
	// Keys are separate buckets; Take reports the window with the fewest
	// tokens left (the hour's), and both.
	if got := b.Take("bob", 0); !got.Allowed || got.Window != 1 || got.Remaining != 1 || got.Reset <= 0 ||
		len(got.Windows) != 2 || got.Windows[0].Remaining != 4 {
		t.Fatalf("bob's take = %+v", got)
	}
	if a.Rejected() != 1 || a.RejectedBy(1) != 1 {
		t.Fatalf("a rejected %d (%d by the hour), want 1 by the hour", a.Rejected(), a.RejectedBy(1))
	}
}

// An entry one replica stores is served by another that never saw it,
// stale or not, until ttl + stale_if_error.
func TestCacheShared(t *testing.T) {
	r := testkit.StartRedis(t)
	a := store.NewCache(newClient(t, r.URL, "t7:", nil), "api", time.Hour, 2*time.Hour, 1<<20, 64<<20)
	b := store.NewCache(newClient(t, r.URL, "t7:", nil), "api", time.Hour, 2*time.Hour, 1<<20, 64<<20)
	e := &cache.Entry{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"a":1}`), Stored: time.Now().Add(-time.Minute)}
	a.Set("k", e)
	got, ok := b.Get("k")
	if !ok || got.Status != 200 || string(got.Body) != `{"a":1}` || got.Header.Get("Content-Type") != "application/json" || !got.Stored.Equal(e.Stored) {
		t.Fatalf("Get on the other replica = %+v %v", got, ok)
	}
	big := &cache.Entry{Status: 200, Body: make([]byte, 2<<20), Stored: time.Now()}
	a.Set("big", big)
	if _, ok := b.Get("big"); ok {
		t.Fatal("an entry above max_entry_size was stored")
	}
	b.Purge()
	c := store.NewCache(newClient(t, r.URL, "t7:", nil), "api", time.Hour, 2*time.Hour, 1<<20, 64<<20)
	if _, ok := c.Get("k"); ok {
		t.Fatal("purged entry still on the store")
	}
}

// A replica's expired local copy gives way to a fresher entry another
// replica stored; with the store gone, the local copy still answers.
func TestCacheLocalCopyYieldsToFresher(t *testing.T) {
	r := testkit.StartRedis(t)
	a := store.NewCache(newClient(t, r.URL, "t8:", nil), "api", time.Minute, time.Hour, 1<<20, 64<<20)
	b := store.NewCache(newClient(t, r.URL, "t8:", nil), "api", time.Minute, time.Hour, 1<<20, 64<<20)
	old := &cache.Entry{Status: 200, Body: []byte("old"), Stored: time.Now().Add(-10 * time.Minute)}
	b.Set("k", old) // b's local copy: expired
	a.Set("k", &cache.Entry{Status: 200, Body: []byte("new"), Stored: time.Now()})
	if e, ok := b.Get("k"); !ok || string(e.Body) != "new" {
		t.Fatalf("b.Get = %v %v, want the fresher entry from the store", e, ok)
	}
	r.Kill()
	if e, ok := a.Get("k"); !ok || string(e.Body) != "new" {
		t.Fatalf("store gone: a.Get = %v %v, want its local copy", e, ok)
	}
}

// Sentinel mode finds the master through a real redis-sentinel (the same
// redis-server binary, with --sentinel).
func TestSentinelMode(t *testing.T) {
	r := testkit.StartRedis(t)
	sentinel := testkit.StartSentinel(t, "mymaster", r.Addr)
	c := modeClient(t, config.Redis{Mode: "sentinel", MasterName: "mymaster", Addrs: []string{sentinel}, KeyPrefix: "t9:"})
	q := store.NewQuota(c, "api", quotaCfg("1/1m", 1, 0), nil)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatalf("through the sentinel: %v", err)
	}
	var ex *ratelimit.ExhaustedError
	if _, err := q.WaitPriority(context.Background(), 0); !errors.As(err, &ex) || ex.RetryAfter < 20*time.Second {
		t.Fatalf("second Wait = %v, want the shared bucket's refusal (not deny's fallback)", err)
	}
	if st, _ := c.State(); st != "ok" {
		t.Fatalf("state %s, want ok", st)
	}
}

// Cluster mode: a quota's two keys and a limiter's windows share a hash
// slot (hash tags), so their scripts run on a cluster.
func TestClusterMode(t *testing.T) {
	addr := testkit.StartCluster(t)
	c := modeClient(t, config.Redis{Mode: "cluster", Addrs: []string{addr}, KeyPrefix: "t10:"})
	q := store.NewQuota(c, "api", quotaCfg("1/1m", 1, 0), nil)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Fatalf("quota on a cluster: %v", err)
	}
	if got := q.Pause(10 * time.Second); got < 9*time.Second {
		t.Fatalf("pause on a cluster = %s", got)
	}
	l := store.NewLimiter(c, "rl", "api", window("5/1m", 5), window("2/1h", 2))
	if d := l.Take("alice", 0); !d.Allowed {
		t.Fatalf("limiter on a cluster: %+v", d)
	}
	if st, reason := c.State(); st != "ok" {
		t.Fatalf("state %s (%s), want ok", st, reason)
	}
}

// modeClient is a client for r (sentinel or cluster) whose fallback denies,
// so that a store call that did not work cannot pass for one that did.
func modeClient(t *testing.T, r config.Redis) *store.Client {
	t.Helper()
	r.Timeout = config.Duration(time.Second)
	c, err := store.New(&config.Store{Redis: r, Replicas: 1, OnError: "deny"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Why config refuses an empty hash tag in a cluster's key_prefix: Redis
// then hashes each key whole, a quota's two keys land in different slots
// and its script is refused (CROSSSLOT). A non-empty tag works (every key
// in one slot), which config only warns about.
func TestClusterKeyPrefixHashTags(t *testing.T) {
	addr := testkit.StartCluster(t)
	broken := modeClient(t, config.Redis{Mode: "cluster", Addrs: []string{addr}, KeyPrefix: "{}t11:"})
	if _, err := store.NewQuota(broken, "api", quotaCfg("1/1m", 1, 0), nil).WaitPriority(context.Background(), 0); err == nil {
		t.Fatal(`a quota under key_prefix "{}" worked on a cluster: config's refusal is not needed`)
	}
	if st, reason := broken.State(); st != "fallback" || !strings.Contains(reason, "CROSSSLOT") {
		t.Fatalf(`key_prefix "{}": state %s (%s), want fallback for CROSSSLOT`, st, reason)
	}
	pinned := modeClient(t, config.Redis{Mode: "cluster", Addrs: []string{addr}, KeyPrefix: "{t12}:"})
	if _, err := store.NewQuota(pinned, "api", quotaCfg("1/1m", 1, 0), nil).WaitPriority(context.Background(), 0); err != nil {
		t.Fatalf(`a quota under key_prefix "{t12}:" on a cluster: %v`, err)
	}
}

// queueLog records what a quota reports of its waiters.
type queueLog struct {
	mu      sync.Mutex
	waiting map[int]int
	waited  map[int]int
}

func (l *queueLog) Waiting(prio, delta int) { l.mu.Lock(); l.waiting[prio] += delta; l.mu.Unlock() }
func (l *queueLog) Waited(prio int, _ time.Duration) {
	l.mu.Lock()
	l.waited[prio]++
	l.mu.Unlock()
}

// Issue 20: a shared quota has what a local one has. Through a real
// redis-server, three low-priority waiters queued before three
// high-priority ones get their tokens after them, and the queue is
// reported (breakwater_queue_* for the quota) as it is for a local quota.
func TestSharedQuotaServesByPriorityAndReportsItsQueue(t *testing.T) {
	r := testkit.StartRedis(t)
	c := newClient(t, r.URL, "t13:", nil)
	obs := &queueLog{waiting: map[int]int{}, waited: map[int]int{}}
	q := store.NewQuota(c, "api", quotaCfg("10/1s", 1, time.Minute), obs)
	if _, err := q.WaitPriority(context.Background(), 0); err != nil { // the burst token
		t.Fatal(err)
	}
	type grant struct {
		label string
		err   error
	}
	out := make(chan grant, 6)
	queue := func(prio int, label string) {
		go func() {
			_, err := q.WaitPriority(context.Background(), prio)
			out <- grant{label, err}
		}()
	}
	for i, l := range []string{"low1", "low2", "low3", "high1", "high2", "high3"} {
		prio := -1
		if i >= 3 {
			prio = 1
		}
		queue(prio, l)
		testkit.WaitFor(t, 10*time.Second, l+" queued", func() bool { return q.Snapshot().Waiting == i+1 })
	}
	if st, reason := c.State(); st != "ok" {
		t.Fatalf("store state %s (%s), want ok: the fallback answered", st, reason)
	}
	var order []string
	for range 6 {
		g := <-out
		if g.err != nil {
			t.Fatalf("%s: %v", g.label, g.err)
		}
		order = append(order, g.label)
	}
	t.Logf("served in order %v", order)
	if want := []string{"high1", "high2", "high3", "low1", "low2", "low3"}; !slices.Equal(order, want) {
		t.Errorf("served in order %v, want %v", order, want)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.waited[1] != 3 || obs.waited[-1] != 3 || obs.waiting[1] != 0 || obs.waiting[-1] != 0 {
		t.Errorf("queue reports: waited %v, waiting %v; want 3 high and 3 low waited, none still waiting", obs.waited, obs.waiting)
	}
}
