package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// The route cache end to end (issue 4): fresh hits, what is never stored,
// Vary, LRU by bytes, stale-if-error when the upstream is down, failing or
// cut off by its breaker, fallback, and coalesced misses.

// counterUpstream answers "hit N for PATH" with the given header.
func counterUpstream(t *testing.T, header http.Header) *testkit.Upstream {
	return testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		fmt.Fprintf(w, "hit %d for %s", n, r.URL.Path)
	})
}

func cacheRoute(url, cache string) map[string]string {
	return map[string]string{"UP": url, "CACHE": cache}
}

// cachedRoute is a config whose one route, cached, sends every path to
// {{UP}}; the route's policy keys follow, indented by four spaces.
const cachedRoute = `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: cached
    match: { path_prefix: / }
    upstream: up
`

const cacheYAML = cachedRoute + `    cache: {{CACHE}}
`

// expectCache checks the status, X-Breakwater-Cache and body of a response.
func expectCache(t *testing.T, what string, resp *http.Response, body []byte, status int, cacheState, wantBody string) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("X-Breakwater-Cache") != cacheState || string(body) != wantBody {
		t.Errorf("%s: %d X-Breakwater-Cache=%q body %q; want %d %q %q", what,
			resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), body, status, cacheState, wantBody)
	}
}

func TestCacheHitWithinTTLDoesNotReachTheUpstream(t *testing.T) {
	u := counterUpstream(t, http.Header{"Content-Type": {"text/plain"}, "X-Upstream": {"yes"}})
	p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))

	resp, body := p.get(t, "/a")
	expectCache(t, "first", resp, body, 200, "miss", "hit 1 for /a")
	time.Sleep(1100 * time.Millisecond) // for an Age of 1
	resp, body = p.get(t, "/a")
	expectCache(t, "second", resp, body, 200, "hit", "hit 1 for /a")
	if got := resp.Header.Get("Age"); got != "1" {
		t.Errorf("Age = %q, want 1", got)
	}
	if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Content-Type") != "text/plain" ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len("hit 1 for /a")) {
		t.Errorf("hit headers: %v", resp.Header)
	}
	if id := resp.Header.Get("X-Request-Id"); id == "" || resp.Header.Values("X-Request-Id")[0] != id || len(resp.Header.Values("X-Request-Id")) != 1 {
		t.Errorf("X-Request-Id on a hit: %q", resp.Header.Values("X-Request-Id"))
	}
	// A HEAD is answered from the GET's entry.
	req, _ := http.NewRequest(http.MethodHead, p.URL+"/a", nil)
	hresp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.StatusCode != 200 || hresp.Header.Get("X-Breakwater-Cache") != "hit" {
		t.Errorf("HEAD: %d %q", hresp.StatusCode, hresp.Header.Get("X-Breakwater-Cache"))
	}
	// Another path is another key.
	resp, body = p.get(t, "/b")
	expectCache(t, "other path", resp, body, 200, "miss", "hit 2 for /b")
	if got := u.Hits.Load(); got != 2 {
		t.Errorf("upstream saw %d requests, want 2", got)
	}
	for result, want := range map[string]float64{"hit": 2, "miss": 2, "stale": 0} {
		if got := p.metric(t, "breakwater_cache_lookups_total", map[string]string{"route": "cached", "result": result}); got != want {
			t.Errorf("breakwater_cache_lookups_total{result=%s} = %v, want %v", result, got, want)
		}
	}
	if got := p.metric(t, "breakwater_requests_total", map[string]string{"route": "cached", "outcome": "cache_hit"}); got != 2 {
		t.Errorf("breakwater_requests_total{outcome=cache_hit} = %v, want 2", got)
	}
}

func TestCacheNoStoreAndNoCache(t *testing.T) {
	t.Run("upstream no-store is not cached", func(t *testing.T) {
		u := counterUpstream(t, http.Header{"Cache-Control": {"no-store"}})
		p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))
		for i := 1; i <= 3; i++ {
			resp, body := p.get(t, "/a")
			expectCache(t, fmt.Sprint("request ", i), resp, body, 200, "miss", fmt.Sprintf("hit %d for /a", i))
		}
	})
	t.Run("upstream private and Set-Cookie are not cached", func(t *testing.T) {
		for _, h := range []http.Header{{"Cache-Control": {"private"}}, {"Set-Cookie": {"s=1"}}} {
			u := counterUpstream(t, h)
			p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))
			p.get(t, "/a")
			p.get(t, "/a")
			if got := u.Hits.Load(); got != 2 {
				t.Errorf("%v: upstream saw %d requests, want 2", h, got)
			}
		}
	})
	t.Run("client no-cache bypasses the lookup and refreshes the entry", func(t *testing.T) {
		u := counterUpstream(t, nil)
		p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))
		resp, body := p.get(t, "/a")
		expectCache(t, "first", resp, body, 200, "miss", "hit 1 for /a")
		resp, body = p.get(t, "/a", "Cache-Control", "no-cache")
		expectCache(t, "no-cache", resp, body, 200, "miss", "hit 2 for /a")
		resp, body = p.get(t, "/a", "Pragma", "no-cache")
		expectCache(t, "Pragma: no-cache", resp, body, 200, "miss", "hit 3 for /a")
		resp, body = p.get(t, "/a")
		expectCache(t, "after", resp, body, 200, "hit", "hit 3 for /a")
		// A client's no-store may read the entry but not replace it.
		resp, body = p.get(t, "/a", "Cache-Control", "no-store")
		expectCache(t, "no-store lookup", resp, body, 200, "hit", "hit 3 for /a")
	})
}

func TestCacheVary(t *testing.T) {
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "X-Tenant")
		fmt.Fprintf(w, "hit %d for %q", n, r.Header.Get("X-Tenant"))
	})
	p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m, vary: [X-Tenant] }`))
	for _, step := range []struct {
		tenant, state, body string
	}{
		{"acme", "miss", `hit 1 for "acme"`},
		{"globex", "miss", `hit 2 for "globex"`},
		{"acme", "hit", `hit 1 for "acme"`},
		{"globex", "hit", `hit 2 for "globex"`},
		{"", "miss", `hit 3 for ""`}, // absent: a key of its own
		{"", "hit", `hit 3 for ""`},
	} {
		var resp *http.Response
		var body []byte
		if step.tenant == "" {
			resp, body = p.get(t, "/a")
		} else {
			resp, body = p.get(t, "/a", "X-Tenant", step.tenant)
		}
		expectCache(t, "tenant "+step.tenant, resp, body, 200, step.state, step.body)
	}
	// Authorization outside vary: such requests are never cached.
	p.get(t, "/a", "Authorization", "Bearer one")
	resp, body := p.get(t, "/a", "Authorization", "Bearer one")
	if resp.Header.Get("X-Breakwater-Cache") != "" || string(body) != `hit 5 for ""` {
		t.Errorf("with Authorization not in vary: %q %q, want uncached", resp.Header.Get("X-Breakwater-Cache"), body)
	}
}

func TestCacheEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1024)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) })
	// An entry costs its 1KiB body, its headers (~70 bytes), its key and
	// 128 bytes of overhead: about 1.3KiB, so three fit in 4KiB, not four.
	p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m, max_size: 4KiB, max_entry_size: 2KiB }`))
	state := func(path string) string {
		resp, got := p.get(t, path)
		if resp.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, len(got))
		}
		return resp.Header.Get("X-Breakwater-Cache")
	}
	for _, step := range []struct{ path, want string }{
		{"/1", "miss"}, {"/2", "miss"}, {"/3", "miss"}, // 3 entries
		{"/1", "hit"},  // /1 becomes the most recently used: /2 is the oldest
		{"/4", "miss"}, // evicts /2
		{"/1", "hit"}, {"/3", "hit"}, {"/4", "hit"},
		{"/2", "miss"}, // evicted; storing it again evicts /1
		{"/1", "miss"},
	} {
		if got := state(step.path); got != step.want {
			t.Errorf("%s: %q, want %q", step.path, got, step.want)
		}
	}
	for _, rs := range p.srv.Live().Routes {
		if rs.Name != "cached" {
			continue
		}
		if rs.Cache == nil {
			t.Fatal("route cached has no cache")
		}
		if st := rs.Cache.Stats(); st.Entries != 3 || st.Bytes > 4096 || st.Evictions != 3 {
			t.Errorf("cache stats %+v, want 3 entries, at most 4096 bytes, 3 evictions", st)
		}
	}
	// An entry over max_entry_size is never stored.
	big := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("y"), 3000))
	})
	pb := startLim(t, cacheYAML, cacheRoute(big.URL, `{ ttl: 1m, max_size: 4KiB, max_entry_size: 2KiB }`))
	pb.get(t, "/big")
	resp, got := pb.get(t, "/big")
	if len(got) != 3000 || resp.Header.Get("X-Breakwater-Cache") != "miss" || big.Hits.Load() != 2 {
		t.Errorf("over max_entry_size: %d bytes, %q, %d upstream hits; want it never cached", len(got), resp.Header.Get("X-Breakwater-Cache"), big.Hits.Load())
	}
}

// staleProxy serves a route whose cache keeps entries 300ms fresh, then
// 1.5s stale, in front of an upstream the test can break.
func staleCounts(t *testing.T, p *limProxy) (stale, lookups float64) {
	return p.metric(t, "breakwater_requests_total", map[string]string{"route": "cached", "outcome": "stale"}),
		p.metric(t, "breakwater_cache_lookups_total", map[string]string{"route": "cached", "result": "stale"})
}

func TestCacheStaleWhenTheUpstreamIsDown(t *testing.T) {
	u := counterUpstream(t, nil)
	p := startLim(t, cachedRoute+`
    retry: { attempts: 2, backoff: { initial: 10ms } }
    cache: { ttl: 300ms, stale_if_error: 1500ms }
`, map[string]string{"UP": u.URL})
	resp, body := p.get(t, "/a")
	stored := time.Now()
	expectCache(t, "fill", resp, body, 200, "miss", "hit 1 for /a")
	u.Close() // connection refused from now on

	time.Sleep(time.Until(stored.Add(400 * time.Millisecond)))
	resp, body = p.get(t, "/a")
	expectCache(t, "upstream down", resp, body, 200, "stale", "hit 1 for /a")
	if age, _ := strconv.Atoi(resp.Header.Get("Age")); resp.Header.Get("Age") == "" || age > 1 {
		t.Errorf("Age = %q", resp.Header.Get("Age"))
	}
	if stale, lookups := staleCounts(t, p); stale != 1 || lookups != 1 {
		t.Errorf("requests_total{outcome=stale} = %v, cache_lookups_total{result=stale} = %v; want 1 and 1", stale, lookups)
	}

	// Past ttl + stale_if_error (1.8s) the entry is gone for good.
	time.Sleep(time.Until(stored.Add(2 * time.Second)))
	resp, body = p.get(t, "/a")
	if resp.StatusCode != 502 || resp.Header.Get("X-Breakwater-Error") != "upstream_unreachable" {
		t.Errorf("past stale_if_error: %d %q %s; want 502 upstream_unreachable", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), body)
	}
	if stale, _ := staleCounts(t, p); stale != 1 {
		t.Errorf("requests_total{outcome=stale} = %v after the entry expired, want still 1", stale)
	}
}

func TestCacheStaleWhenTheUpstreamFails(t *testing.T) {
	var failing atomic.Bool
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "down")
			return
		}
		fmt.Fprintf(w, "hit %d", n)
	})
	p := startLim(t, cachedRoute+`
    retry: { attempts: 3, backoff: { initial: 1ms, max: 1ms } }
    circuit_breaker: { failure_threshold: 100 }
    cache: { ttl: 100ms, stale_if_error: 1m }
`, map[string]string{"UP": u.URL})
	p.get(t, "/a")
	failing.Store(true)
	time.Sleep(200 * time.Millisecond)
	before := u.Hits.Load()
	resp, body := p.get(t, "/a")
	expectCache(t, "503 after retries", resp, body, 200, "stale", "hit 1")
	if got := u.Hits.Load() - before; got != 3 {
		t.Errorf("%d attempts before the stale answer, want 3 (retries first)", got)
	}
	// An uncached path gets the upstream's own failure.
	resp, body = p.get(t, "/never-cached")
	if resp.StatusCode != 503 || string(body) != "down" || resp.Header.Get("X-Breakwater-Error") != "" {
		t.Errorf("uncached path: %d %q %q; want the upstream's 503 passed through", resp.StatusCode, body, resp.Header.Get("X-Breakwater-Error"))
	}
	if stale, lookups := staleCounts(t, p); stale != 1 || lookups != 1 {
		t.Errorf("requests_total{outcome=stale} = %v, cache_lookups_total{result=stale} = %v; want 1 and 1", stale, lookups)
	}
	// Recovery: a good answer replaces the stale entry.
	failing.Store(false)
	resp, body = p.get(t, "/a")
	if resp.StatusCode != 200 || resp.Header.Get("X-Breakwater-Cache") != "miss" || strings.HasPrefix(string(body), "hit 1") {
		t.Errorf("after recovery: %d %q %q", resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), body)
	}
	if resp2, body2 := p.get(t, "/a"); resp2.Header.Get("X-Breakwater-Cache") != "hit" || !bytes.Equal(body2, body) {
		t.Errorf("the fresh answer was not stored: %q %q", resp2.Header.Get("X-Breakwater-Cache"), body2)
	}
}

func TestCacheStaleWhenTheBreakerIsOpen(t *testing.T) {
	var failing atomic.Bool
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "hit %d", n)
	})
	p := startLim(t, cachedRoute+`
    retry: { attempts: 1 }
    circuit_breaker: { failure_threshold: 2, delay: 30s }
    cache: { ttl: 100ms, stale_if_error: 1m }
`, map[string]string{"UP": u.URL})
	p.get(t, "/a")
	failing.Store(true)
	for range 2 {
		if resp, _ := p.get(t, "/other"); resp.StatusCode != 500 {
			t.Fatalf("failing upstream: %d", resp.StatusCode)
		}
	}
	if resp, _ := p.get(t, "/other"); resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Fatalf("the breaker did not open: %d %q", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	time.Sleep(150 * time.Millisecond)
	before := u.Hits.Load()
	resp, body := p.get(t, "/a")
	expectCache(t, "breaker open", resp, body, 200, "stale", "hit 1")
	if got := u.Hits.Load() - before; got != 0 {
		t.Errorf("%d requests reached the upstream through an open breaker", got)
	}
	if stale, lookups := staleCounts(t, p); stale != 1 || lookups != 1 {
		t.Errorf("requests_total{outcome=stale} = %v, cache_lookups_total{result=stale} = %v; want 1 and 1", stale, lookups)
	}
}

func TestCacheFallbackOnlyWithoutAStaleEntry(t *testing.T) {
	u := counterUpstream(t, nil)
	p := startLim(t, cachedRoute+`
    retry: { attempts: 1 }
    cache: { ttl: 100ms, stale_if_error: 1m }
    fallback: { status: 200, content_type: application/json, body: '{"items":[]}' }
`, map[string]string{"UP": u.URL})
	p.get(t, "/cached")
	u.Close()
	time.Sleep(150 * time.Millisecond)
	resp, body := p.get(t, "/cached")
	expectCache(t, "stale first", resp, body, 200, "stale", "hit 1 for /cached")
	resp, body = p.get(t, "/uncached")
	if resp.StatusCode != 200 || string(body) != `{"items":[]}` || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("X-Breakwater-Cache") != "" {
		t.Errorf("no stale entry: %d %q %q, want the fallback", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if got := p.metric(t, "breakwater_requests_total", map[string]string{"route": "cached", "outcome": "fallback"}); got != 1 {
		t.Errorf("requests_total{outcome=fallback} = %v, want 1", got)
	}
	if stale, _ := staleCounts(t, p); stale != 1 {
		t.Errorf("requests_total{outcome=stale} = %v, want 1", stale)
	}
}

func TestCacheConcurrentMissesSendOneRequest(t *testing.T) {
	release := make(chan struct{})
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(200 * time.Millisecond)
		fmt.Fprintf(w, "the one answer (%d)", n)
	})
	p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))
	const n = 50
	p.client.Transport.(*http.Transport).MaxIdleConnsPerHost = n
	var wg sync.WaitGroup
	var mu sync.Mutex
	bodies := map[string]int{}
	states := map[string]int{}
	for range n {
		wg.Go(func() {
			<-release
			resp, err := p.client.Get(p.URL + "/hot")
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("%d %v", resp.StatusCode, err)
			}
			mu.Lock()
			bodies[string(b)]++
			states[resp.Header.Get("X-Breakwater-Cache")]++
			mu.Unlock()
		})
	}
	close(release)
	wg.Wait()
	if got := u.Hits.Load(); got != 1 {
		t.Errorf("upstream saw %d requests for one key, want 1", got)
	}
	if len(bodies) != 1 || bodies["the one answer (1)"] != n {
		t.Errorf("bodies: %v; want all %d to get the one answer", bodies, n)
	}
	if states["miss"] != 1 || states["hit"] != n-1 {
		t.Errorf("X-Breakwater-Cache: %v; want 1 miss and %d hits", states, n-1)
	}
}

func TestCacheUnshareableAnswerReleasesTheWaiters(t *testing.T) {
	release := make(chan struct{})
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		time.Sleep(200 * time.Millisecond)
		fmt.Fprintf(w, "answer %d", n)
	})
	p := startLim(t, cacheYAML, cacheRoute(u.URL, `{ ttl: 1m }`))
	const n = 20
	p.client.Transport.(*http.Transport).MaxIdleConnsPerHost = n
	var wg sync.WaitGroup
	var ok atomic.Int64
	start := time.Now()
	for range n {
		wg.Go(func() {
			<-release
			resp, err := p.client.Get(p.URL + "/private")
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && resp.Header.Get("X-Breakwater-Cache") == "miss" {
				ok.Add(1)
			}
		})
	}
	close(release)
	wg.Wait()
	took := time.Since(start)
	// The waiters learn at the leader's headers that they must go on
	// their own: about two upstream round trips in all, not twenty.
	if ok.Load() != n || u.Hits.Load() != n {
		t.Errorf("%d of %d answered as misses, %d upstream requests; want every one sent upstream", ok.Load(), n, u.Hits.Load())
	}
	if took > 2*time.Second {
		t.Errorf("took %s: the waiters were held past the leader's headers", took)
	}
}

// A request that waits for a coalesced miss and then has to go upstream
// itself has only what is left of its route timeout: one clock, not two.
func TestCoalescedWaiterHasOneRouteTimeout(t *testing.T) {
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select { // every attempt stalls past the route timeout
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	p := startLim(t, cacheYAML+"    timeout: 1s\n    retry: off\n", cacheRoute(u.URL, `{ ttl: 1m }`))
	type answer struct {
		status int
		at     time.Time
	}
	leader := make(chan answer, 1)
	go func() {
		resp, err := p.client.Get(p.URL + "/hot")
		if err != nil {
			leader <- answer{at: time.Now()}
			return
		}
		resp.Body.Close()
		leader <- answer{resp.StatusCode, time.Now()}
	}()
	testkit.WaitFor(t, 5*time.Second, "the leader upstream", func() bool { return u.Hits.Load() == 1 })
	start := time.Now()
	resp, err := p.client.Get(p.URL + "/hot")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	done := time.Now()
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Breakwater-Error") != "timeout" {
		t.Errorf("waiter: got %d %q, want 504 timeout", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	lead := <-leader
	if lead.status != http.StatusGatewayTimeout {
		t.Errorf("leader: got %d, want 504", lead.status)
	}
	// The waiter came a moment after the leader, so one clock ends it a
	// moment after the leader's; two clocks would give it a whole new
	// second after the leader's. Half of that tells them apart.
	after := done.Sub(lead.at)
	t.Logf("waiter answered after %v, %v after the leader (route timeout 1 s)", done.Sub(start), after)
	if after > 500*time.Millisecond {
		t.Errorf("waiter answered %v after the leader with a 1 s route timeout: it got a clock of its own", after)
	}
}
