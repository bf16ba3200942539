package chaos

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// Every scenario of docs/resilience.md, in its order.

// TestRandom503s: an upstream that answers 503 to 30% of requests at
// random, a route with 4 attempts: at least 99% of requests succeed
// (1 − 0.3⁴ = 99.19% expected) for at most 1.45 upstream attempts per
// request (1 + 0.3 + 0.09 + 0.027 = 1.417 expected).
func TestRandom503s(t *testing.T) {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(7, 1)) // fixed: with one caller the run is reproducible
	var attempts atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		mu.Lock()
		fail := rng.Float64() < 0.3
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	b := startBW(t, `
upstreams:
  flaky: { url: "`+up.URL+`" }
routes:
  - name: flaky
    match: { path_prefix: / }
    upstream: flaky
    retry:
      attempts: 4
      on: [503]
      backoff: { initial: 1ms, max: 4ms, multiplier: 2, jitter: 0 }
    circuit_breaker: off
`)
	n := pick(2000, 10000)
	c := client(10 * time.Second)
	ok := 0
	statuses := map[int]int{}
	start := time.Now()
	for i := 0; i < n; i++ {
		a := get(c, b.URL+"/item")
		if a.err == nil && a.status == 200 {
			ok++
		}
		statuses[a.status]++
	}
	elapsed := time.Since(start)
	success := float64(ok) / float64(n)
	ratio := float64(attempts.Load()) / float64(n)
	t.Logf("%d requests in %s: %.2f%% succeeded (expected 99.19%%), %d upstream attempts = %.3f per request (expected 1.417); statuses %v",
		n, elapsed.Round(time.Millisecond), 100*success, attempts.Load(), ratio, statuses)
	if success < 0.99 {
		t.Errorf("success %.2f%%, want ≥ 99%%", 100*success)
	}
	if ratio > 1.45 {
		t.Errorf("%.3f upstream attempts per request, want ≤ 1.45", ratio)
	}
}

// TestFullOutage: every attempt fails (503), 20 callers keep calling. With
// a 20% retry budget and the default breaker (50% of at least 20
// attempts), the upstream gets at most 1.2 attempts per request (+3, the
// budget's min_concurrent) over the outage, the breaker opens within
// min_requests + callers requests, and from then on every answer is 503
// circuit_open with Retry-After and nothing reaches the upstream. How fast
// those answers come is a figure, not a pass mark: the client-side p50/p99
// are printed with their ratio to a bare handler answering 503 at once,
// measured in the same run. The budget's own effect, breaker off, is
// printed for the record.
func TestFullOutage(t *testing.T) {
	var attempts atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		time.Sleep(2 * time.Millisecond) // a real outage answers slowly enough for attempts to overlap
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer up.Close()
	const minRequests, callers = 20, 20
	b := startBW(t, `
upstreams:
  dead: { url: "`+up.URL+`" }
defaults:
  retry:
    attempts: 3
    backoff: { initial: 2ms, max: 10ms, multiplier: 2, jitter: 0.25 }
    budget: { ratio: 0.2, min_concurrent: 3 }
routes:
  - name: dead
    match: { path_prefix: /dead }
    upstream: dead
    circuit_breaker: { failure_rate: 50%, min_requests: `+strconv.Itoa(minRequests)+`, window: 30s, delay: 60s }
  - name: budget-only
    match: { path_prefix: /budget }
    upstream: dead
    circuit_breaker: off
`)
	c := client(10 * time.Second)
	hammer := func(path string, perCaller int, untilOpen bool) (requests int64) {
		var n atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < perCaller; j++ {
					a := get(c, b.URL+path)
					n.Add(1)
					if untilOpen && a.kind == "circuit_open" {
						return
					}
				}
			}()
		}
		wg.Wait()
		return n.Load()
	}

	// The budget alone, for the record.
	budgetReqs := hammer("/budget", 25, false)
	budgetAttempts := attempts.Swap(0)
	t.Logf("budget alone (breaker off): %d requests, %d upstream attempts = %.2f per request (min_concurrent 3 lets 3 retries run whatever the load)",
		budgetReqs, budgetAttempts, float64(budgetAttempts)/float64(budgetReqs))

	// Phase 1: 20 callers until each has seen the breaker open.
	untilOpen := hammer("/dead", 1000, true)
	beforeOpen := attempts.Load()
	t.Logf("until open: %d requests (each caller's last one answered circuit_open), %d upstream attempts (%.2f per request); min_requests %d, %d callers",
		untilOpen, beforeOpen, float64(beforeOpen)/float64(untilOpen), minRequests, callers)
	if untilOpen > 2*(minRequests+callers) {
		t.Errorf("every caller saw the breaker open only after %d requests, want ≤ 2 × (min_requests + callers) = %d", untilOpen, 2*(minRequests+callers))
	}

	// Phase 2: fail-fast. Its speed is reported, not asserted: the client,
	// the kernel and the race detector dominate it on a slow machine (a
	// rejection takes breakwater microseconds). The baseline is a bare
	// handler answering 503 at once, over the same loopback with the same
	// client, interleaved with breakwater's rounds in the same run.
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bare.Close()
	n := pick(1000, 10000)
	const rounds = 4
	var lat, baseLat []time.Duration
	var wrong, baseWrong int64
	var retryAfter string
	for i := 0; i < rounds; i++ {
		l, w, ra := failFast(c, b.URL+"/dead", n/rounds, "circuit_open")
		lat, wrong = append(lat, l...), wrong+w
		if ra != "" {
			retryAfter = ra
		}
		l, w, _ = failFast(c, bare.URL+"/dead", n/rounds, "")
		baseLat, baseWrong = append(baseLat, l...), baseWrong+w
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	b50, b99 := percentile(baseLat, 0.5), percentile(baseLat, 0.99)
	after := attempts.Load() - beforeOpen
	t.Logf("fail-fast: %d requests, p50 %s, p99 %s, max %s; %d not circuit_open; %d upstream attempts meanwhile; Retry-After %v s",
		len(lat), ms(p50), ms(p99), ms(percentile(lat, 1)), wrong, after, retryAfter)
	t.Logf("fail-fast vs a bare handler answering 503 at once (same client, same loopback, interleaved; %d requests, %d not 503): p50 %s vs %s = ×%.2f, p99 %s vs %s = ×%.2f%s",
		len(baseLat), baseWrong, ms(p50), ms(b50), ratio(p50, b50), ms(p99), ms(b99), ratio(p99, b99), raceNote())
	total := untilOpen + int64(len(lat))
	limit := 1.2*float64(total) + 3
	t.Logf("whole outage: %d requests, %d upstream attempts = %.3f per request (bound 1.2×+3 = %.0f)",
		total, attempts.Load(), float64(attempts.Load())/float64(total), limit)
	if float64(attempts.Load()) > limit {
		t.Errorf("%d upstream attempts for %d requests, want ≤ 1.2×requests+3 = %.0f", attempts.Load(), total, limit)
	}
	if wrong > 0 {
		t.Errorf("%d fail-fast answers were not 503 circuit_open", wrong)
	}
	if after > 0 {
		t.Errorf("%d attempts reached the upstream while the breaker was open", after)
	}
	if retryAfter == "" || retryAfter == "0" {
		t.Errorf("Retry-After %q on circuit_open, want the seconds until half-open", retryAfter)
	}
}

// failFast sends n GETs to url from two callers on c and returns their
// latencies as the client saw them, how many failed or were not 503 with
// X-Breakwater-Error kind (none wanted when kind is ""), and the last
// Retry-After.
func failFast(c *http.Client, url string, n int, kind string) (lat []time.Duration, wrong int64, retryAfter string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			my := make([]time.Duration, 0, n/2)
			var bad int64
			var ra string
			for j := 0; j < n/2; j++ {
				start := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					bad++
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				my = append(my, time.Since(start))
				if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != kind {
					bad++
				}
				ra = resp.Header.Get("Retry-After")
			}
			mu.Lock()
			defer mu.Unlock()
			lat, wrong = append(lat, my...), wrong+bad
			if ra != "" {
				retryAfter = ra
			}
		}()
	}
	wg.Wait()
	return lat, wrong, retryAfter
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// raceNote says, in a figure's line, that the client side is race-built
// (make test), which slows it several-fold; make chaos is not, and the
// breakwater binary under test never is.
func raceNote() string {
	if testkit.RaceEnabled {
		return " (race-built client)"
	}
	return ""
}

// TestLatencyVsPerTryTimeout: a toxiproxy latency toxic makes every answer
// 1 s late. per_try_timeout (150 ms) cuts each attempt and the next one
// is sent; the route timeout bounds the whole. An upstream slow only to
// the first attempt of each request shows the retry rescuing it.
func TestLatencyVsPerTryTimeout(t *testing.T) {
	var seen counter
	firstSeen := sync.Map{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r.URL.Path)
		if strings.HasPrefix(r.URL.Path, "/rescue") {
			if _, again := firstSeen.LoadOrStore(r.Header.Get("X-Request-Id"), true); !again {
				select { // slow to the first attempt only
				case <-time.After(2 * time.Second):
				case <-r.Context().Done():
					return
				}
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	slow := toxic(t, "latency", hostOf(up.URL))
	addToxic(t, slow, `{"name":"late","type":"latency","stream":"downstream","attributes":{"latency":1000}}`)
	b := startBW(t, `
upstreams:
  slow: { url: "http://`+slow.Listen+`" }
  direct: { url: "`+up.URL+`" }
defaults:
  circuit_breaker: off
  # Four requests time out together on each route: the budget's floor of
  # concurrent retries is raised so that all of them may retry.
  retry: { budget: { ratio: 0.2, min_concurrent: 20 } }
routes:
  - name: cut
    match: { path_prefix: /cut }
    upstream: slow
    timeout: 2s
    retry: { attempts: 3, on: [timeout], per_try_timeout: 150ms, backoff: { initial: 10ms, max: 10ms, jitter: 0 } }
  - name: bounded
    match: { path_prefix: /bounded }
    upstream: slow
    timeout: 500ms
    retry: { attempts: 10, on: [timeout], per_try_timeout: 150ms, backoff: { initial: 10ms, max: 10ms, jitter: 0 } }
  - name: rescue
    match: { path_prefix: /rescue }
    upstream: direct
    timeout: 2s
    retry: { attempts: 3, on: [timeout], per_try_timeout: 150ms, backoff: { initial: 10ms, max: 10ms, jitter: 0 } }
`)
	const n = 4
	c := client(10 * time.Second)
	results := map[string][]answer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, route := range []string{"cut", "bounded", "rescue"} {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := get(c, fmt.Sprintf("%s/%s/%d", b.URL, route, i))
				mu.Lock()
				results[route] = append(results[route], a)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	count := func(route string) int {
		total := 0
		for p, k := range seen.seen() {
			if strings.HasPrefix(p, "/"+route+"/") || p == "/" && route == "" {
				total += k
			}
		}
		return total
	}
	// strip_prefix is not set: the upstream sees /cut/N etc.
	for _, route := range []string{"cut", "bounded", "rescue"} {
		var ds []string
		for _, a := range results[route] {
			ds = append(ds, fmt.Sprintf("%d %s %s", a.status, a.kind, ms(a.elapsed)))
		}
		t.Logf("%-7s %d upstream attempts for %d requests; answers: %s", route, count(route), n, strings.Join(ds, ", "))
	}
	for _, a := range results["cut"] {
		if a.status != 504 || a.kind != "timeout" {
			t.Errorf("cut: %d %q, want 504 timeout after 3 cut attempts", a.status, a.kind)
		}
		// Timers fire late on a loaded machine, never early: the lower
		// bound holds anywhere. Not cut, the first attempt would answer
		// 200 after the toxic's 1 s: the 504 above is the check on that.
		if a.elapsed < 450*time.Millisecond {
			t.Errorf("cut: answered after %s, want at least 3 × 150 ms", ms(a.elapsed))
		}
	}
	if got := count("cut"); got != 3*n {
		t.Errorf("cut: %d upstream attempts, want 3 per request = %d", got, 3*n)
	}
	for _, a := range results["bounded"] {
		if a.status != 504 || a.kind != "timeout" {
			t.Errorf("bounded: %d %q, want 504 timeout", a.status, a.kind)
		}
		// Not bounded would be 10 × 160 ms: the attempt count below is
		// the check on that, not a time.
	}
	// 500 ms / 160 ms allows 3–4 attempts; on a loaded machine timers fire
	// late and fewer fit, but never more, and never fewer than two.
	if got := count("bounded"); got > 4*n || got < 2*n {
		t.Errorf("bounded: %d upstream attempts, want 2–4 per request (500 ms / 160 ms, fewer when timers run late)", got)
	}
	for _, a := range results["rescue"] {
		// Not rescued, the first attempt would run its 2 s into the
		// route's 2 s timeout: one attempt per request, not the two
		// counted below. Its time is a figure.
		if a.status != 200 {
			t.Errorf("rescue: %d after %s, want 200 once the first attempt is cut at 150 ms, well before its 2 s", a.status, ms(a.elapsed))
		}
	}
	if got := count("rescue"); got != 2*n {
		t.Errorf("rescue: %d upstream attempts, want 2 per request = %d", got, 2*n)
	}
}

// TestResetMidBody: the upstream's connection breaks after the headers
// and part of the body are out — cut by a toxiproxy limit_data toxic
// (40 000 bytes), closed with a FIN, or with an RST when a reset_peer
// toxic of toxicity 0 sits in the chain (toxiproxy then sets SO_LINGER 0
// on both sockets). The response has started, so there is exactly one
// attempt, and the client's response is cut short: an error, never a
// clean end, and never bytes from a second attempt spliced in.
func TestResetMidBody(t *testing.T) {
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	whole := bytes.Repeat(pattern, 16)
	var seen counter
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/cl") {
			w.Header().Set("Content-Length", strconv.Itoa(len(whole)))
		}
		_, _ = w.Write(pattern)
		w.(http.Flusher).Flush()
		select { // the rest never comes: the toxic cuts the connection first
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	fin := toxic(t, "fin", hostOf(up.URL))
	addToxic(t, fin, `{"name":"cut","type":"limit_data","stream":"downstream","attributes":{"bytes":40000}}`)
	rst := toxic(t, "rst", hostOf(up.URL))
	addToxic(t, rst, `{"name":"cut","type":"limit_data","stream":"downstream","attributes":{"bytes":40000}}`)
	addToxic(t, rst, `{"name":"linger0","type":"reset_peer","stream":"downstream","toxicity":0,"attributes":{"timeout":0}}`)
	b := startBW(t, `
upstreams:
  fin: { url: "http://`+fin.Listen+`" }
  rst: { url: "http://`+rst.Listen+`" }
defaults:
  retry: { attempts: 3, on: [connect_error, timeout, 502, 503, 504] }
  circuit_breaker: off
routes:
  - { name: fin, match: { path_prefix: /fin/ }, upstream: fin }
  - { name: rst, match: { path_prefix: /rst/ }, upstream: rst }
`)
	for _, path := range []string{"/fin/cl", "/fin/chunked", "/rst/cl", "/rst/chunked"} {
		c := client(10 * time.Second)
		start := time.Now()
		resp, err := c.Get(b.URL + path)
		if err != nil {
			t.Errorf("%s: %v (want the headers, then a cut body)", path, err)
			continue
		}
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%-13s status %d, Content-Length %d, %d body bytes then %q after %s; upstream attempts %d",
			path, resp.StatusCode, resp.ContentLength, len(body), fmt.Sprint(rerr), ms(time.Since(start)), seen.path(path))
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d, want the upstream's 200 (its headers were out)", path, resp.StatusCode)
		}
		if rerr == nil {
			t.Errorf("%s: body ended cleanly with %d bytes, want an error (aborted response)", path, len(body))
		}
		if len(body) >= len(whole) || !bytes.Equal(body, whole[:len(body)]) {
			t.Errorf("%s: the %d bytes received are not a strict prefix of the upstream's body (spliced?)", path, len(body))
		}
		if got := seen.path(path); got != 1 {
			t.Errorf("%s: %d upstream attempts, want exactly 1 (the response had started)", path, got)
		}
	}
}

// TestStaleWhileDown: with a warm cache, the upstream goes away (the
// toxiproxy in front of it stops: connections refused) for 3 s (10 s long
// form): every cached GET is still answered, from the stale entry.
func TestStaleWhileDown(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "item "+r.URL.Path)
	}))
	defer up.Close()
	p := toxic(t, "down", hostOf(up.URL))
	b := startBW(t, `
upstreams:
  api: { url: "http://`+p.Listen+`", connect_timeout: 200ms }
routes:
  - name: items
    match: { path_prefix: /items/ }
    upstream: api
    timeout: 2s
    retry: { attempts: 2, backoff: { initial: 10ms, max: 10ms, jitter: 0 } }
    cache: { ttl: 300ms, stale_if_error: 1h }
`)
	const keys = 50
	c := client(5 * time.Second)
	for i := 0; i < keys; i++ {
		if a := get(c, fmt.Sprintf("%s/items/%d", b.URL, i)); a.status != 200 {
			t.Fatalf("warming: %d %s", a.status, a.body)
		}
	}
	p.Stop()
	time.Sleep(400 * time.Millisecond) // every entry is now past its ttl
	down := pick(3*time.Second, 10*time.Second)
	end := time.Now().Add(down)
	var mu sync.Mutex
	var lat []time.Duration
	kinds := map[string]int{}
	var bad []string
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(end); i++ {
				path := fmt.Sprintf("/items/%d", i%keys)
				a := get(c, b.URL+path)
				mu.Lock()
				lat = append(lat, a.elapsed)
				if a.err != nil || a.status != 200 || string(a.body) != "item "+path || (a.cache != "stale" && a.cache != "hit") {
					if len(bad) < 5 {
						bad = append(bad, fmt.Sprintf("%s: %d %q cache=%q err=%v", path, a.status, a.body, a.cache, a.err))
					}
					kinds["bad"]++
				} else {
					kinds[a.cache]++
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	answered := kinds["stale"] + kinds["hit"]
	t.Logf("upstream down %s: %d GETs, %d stale, %d fresh hits, %d not answered from cache (%.2f%% answered); p50 %s, p99 %s; breaker %s",
		down, len(lat), kinds["stale"], kinds["hit"], kinds["bad"], 100*float64(answered)/float64(len(lat)),
		ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), breakerState(t, b))
	if kinds["bad"] > 0 || len(lat) == 0 {
		t.Errorf("%d of %d cached GETs not answered stale, e.g. %v", kinds["bad"], len(lat), bad)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
}

// breakerState describes the first breaker GET /breakers lists, for the
// log.
func breakerState(t *testing.T, b *bw) string {
	bs := testkit.Breakers(t, b.Admin)
	if len(bs) == 0 {
		return "none listed"
	}
	return fmt.Sprintf("%s %s after %d failures", bs[0].Name, bs[0].State, bs[0].Failures)
}

// TestQuotaAtTwiceTheLoad: the upstream allows 50 requests/s (burst 10)
// and answers 429 beyond; breakwater's quota for it is 50/1s, burst 5.
// Callers offer 100 requests/s: the upstream never sees a 429's worth —
// zero 429s — and callers past max_wait get quota_exhausted.
func TestQuotaAtTwiceTheLoad(t *testing.T) {
	lim := rate.NewLimiter(50, 10)
	var ok, throttled atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !lim.Allow() {
			throttled.Add(1)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		ok.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	b := startBW(t, `
upstreams:
  saas:
    url: "`+up.URL+`"
    quota: { rate: 50/1s, burst: 5, max_wait: 1s }
routes:
  - name: saas
    match: { path_prefix: / }
    upstream: saas
    timeout: 5s
`)
	d := pick(3*time.Second, 10*time.Second)
	const offered = 100 // req/s, twice the quota
	c := client(10 * time.Second)
	var mu sync.Mutex
	statuses := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	n := int(d.Seconds() * offered)
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / offered)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := get(c, b.URL+"/call")
			mu.Lock()
			statuses[fmt.Sprintf("%d %s", a.status, a.kind)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d requests offered at %d/s over %s: upstream answered %d (%.1f/s) and throttled %d; callers got %v",
		n, offered, d, ok.Load(), float64(ok.Load())/elapsed.Seconds(), throttled.Load(), statuses)
	if throttled.Load() != 0 {
		t.Errorf("the upstream answered %d requests with 429, want 0", throttled.Load())
	}
	if ok.Load() == 0 {
		t.Error("nothing reached the upstream")
	}
}

// TestReloadUnderLoad: the config file is rewritten and reloaded 20 times
// (100 long form), through POST /reload and SIGHUP in turn, while callers
// keep sending: not one error, and the new config is seen upstream.
func TestReloadUnderLoad(t *testing.T) {
	var seenMu sync.Mutex
	seen := map[string]int{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenMu.Lock()
		seen[r.Header.Get("X-Config")]++
		seenMu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	config := func(gen int) string {
		return fmt.Sprintf(`
upstreams:
  api:
    url: "%s"
    headers: { set: { X-Config: "gen-%d" } }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
    timeout: %dms
    retry: { attempts: %d }
`, up.URL, gen, 5000+gen, 2+gen%2)
	}
	b := startBW(t, config(0))
	reloads := pick(20, 100)
	c := client(10 * time.Second)
	var stop atomic.Bool
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				a := get(c, b.URL+"/x")
				sent.Add(1)
				if a.err != nil || a.status != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s %v", a.status, a.body, a.err))
				}
			}
		}()
	}
	start := time.Now()
	badReloads := 0
	for gen := 1; gen <= reloads; gen++ {
		testkit.ReplaceFile(t, b.File, config(gen))
		if gen%2 == 0 {
			b.Signal(t, syscall.SIGHUP)
		} else {
			resp, err := http.Post(b.Admin+"/reload", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				badReloads++
				t.Errorf("POST /reload: %d %s", resp.StatusCode, body)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	last := fmt.Sprintf("gen-%d", reloads)
	testkit.WaitFor(t, 5*time.Second, "the last config upstream", func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		return seen[last] > 0
	})
	stop.Store(true)
	wg.Wait()
	ok := b.metric("breakwater_config_reloads_total", `result="success"`)
	bad := b.metric("breakwater_config_reloads_total", `result="failure"`)
	seenMu.Lock()
	gens := len(seen)
	seenMu.Unlock()
	t.Logf("%d reloads in %s under load: %d requests, %d errors; reloads counted: %.0f success, %.0f failure (file watching adds its own); %d configs seen upstream",
		reloads, time.Since(start).Round(time.Millisecond), sent.Load(), failed.Load(), ok, bad, gens)
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed during reloads, e.g. %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	if ok < float64(reloads) || bad > 0 || badReloads > 0 {
		t.Errorf("reloads counted %.0f success / %.0f failure, want ≥ %d / 0", ok, bad, reloads)
	}
}

// TestSIGTERMInFlight: SIGTERM arrives while 50 requests (200 long form)
// are waiting on the upstream: every one completes with 200 and the
// process exits 0.
func TestSIGTERMInFlight(t *testing.T) {
	n := pick(50, 200)
	var inflight atomic.Int64
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "done")
	}))
	defer up.Close()
	b := startBW(t, `
server: { drain_delay: 0s, shutdown_timeout: 10s }
upstreams:
  api: { url: "`+up.URL+`" }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
`)
	c := client(20 * time.Second)
	answers := make(chan answer, n)
	for i := 0; i < n; i++ {
		go func() { answers <- get(c, b.URL+"/slow") }()
	}
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("%d requests in flight upstream", n), func() bool { return inflight.Load() == int64(n) })
	b.Signal(t, syscall.SIGTERM)
	// While draining, /readyz says 503 (the admin listener closes last).
	b.WaitStatus(t, b.Admin+"/readyz", http.StatusServiceUnavailable, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	signalled := time.Now()
	close(release)
	ok := 0
	var failures []string
	for i := 0; i < n; i++ {
		a := <-answers
		if a.err == nil && a.status == 200 && string(a.body) == "done" {
			ok++
		} else if len(failures) < 5 {
			failures = append(failures, fmt.Sprintf("%d %q %v", a.status, a.body, a.err))
		}
	}
	code := b.ExitCode(t, 15*time.Second)
	t.Logf("SIGTERM with %d requests in flight: %d completed with 200, exit code %d, %s from release to exit",
		n, ok, code, ms(time.Since(signalled)))
	if ok != n {
		t.Errorf("%d of %d in-flight requests failed: %v", n-ok, n, failures)
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
