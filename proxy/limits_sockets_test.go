package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Issue 4, limits and graceful degradation, end to end: the route rate
// limit, the upstream quota and the cache (cache_sockets_test.go), each seen
// from a client in front of a real listener, with upstreams we control.

// limProxy is a proxy.Server serving one config behind a real listener.
type limProxy struct {
	*httptest.Server
	srv     *proxy.Server
	metrics *observe.Metrics
	hub     *observe.Hub
	client  *http.Client
}

// startLim serves yaml, in which every {{NAME}} is first replaced by
// vars[NAME].
func startLim(t testing.TB, yaml string, vars map[string]string) *limProxy {
	t.Helper()
	for k, v := range vars {
		yaml = strings.ReplaceAll(yaml, "{{"+k+"}}", v)
	}
	cfg, _, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	hub := observe.NewHub()
	metrics := observe.NewMetrics("t")
	srv := proxy.New(zerolog.Nop(), observe.NewFanout(metrics, hub))
	if err := srv.Load(cfg); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ts.Close()
	})
	return &limProxy{Server: ts, srv: srv, metrics: metrics, hub: hub, client: &http.Client{Transport: tr}}
}

// okUpstream answers every request 200 "ok".
func okUpstream(t testing.TB) *testkit.Upstream {
	return testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
}

// call sends one request through the proxy and reads the whole answer.
func (p *limProxy) call(t testing.TB, c *http.Client, method, path string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c == nil {
		c = p.client
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, b
}

func (p *limProxy) get(t testing.TB, path string, kv ...string) (*http.Response, []byte) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return p.call(t, nil, http.MethodGet, path, h, "")
}

// metric sums the samples of a counter or gauge whose labels include every
// pair in labels, scraped from the proxy's own registry.
func (p *limProxy) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return testkit.SumMetric(t, p.metrics.Registry, name, labels)
}

// quota is the upstream's quota now.
func (p *limProxy) quota(t testing.TB, upstream string) ratelimit.QuotaSnapshot {
	t.Helper()
	for _, u := range p.srv.Live().Upstreams {
		if u.Name == upstream && u.Quota != nil {
			return u.Quota.Snapshot()
		}
	}
	t.Fatalf("upstream %s has no quota", upstream)
	return ratelimit.QuotaSnapshot{}
}

// forceBreaker sets a breaker's state, as POST /breakers/{name} does.
func forceBreaker(t testing.TB, srv *proxy.Server, name string, state policy.State) {
	t.Helper()
	for _, b := range srv.Live().Breakers {
		if b.Name == name {
			if !b.Force(state) {
				t.Fatalf("breaker %s: cannot force %s", name, state)
			}
			return
		}
	}
	t.Fatalf("no breaker %s", name)
}

// limProblem is an application/problem+json body.
type limProblem struct {
	Status     int    `json:"status"`
	Type       string `json:"type"`
	Route      string `json:"route"`
	RequestID  string `json:"request_id"`
	RetryAfter *int   `json:"retry_after_seconds"`
}

func decodeProblem(t testing.TB, resp *http.Response, body []byte) limProblem {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json; body %s", ct, body)
	}
	var p limProblem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %q: %v", body, err)
	}
	return p
}

// limRPC is a JSON-RPC error response.
type limRPC struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Kind       string `json:"kind"`
			RetryAfter *int   `json:"retry_after_seconds"`
			RequestID  string `json:"request_id"`
		} `json:"data"`
	} `json:"error"`
}

const rpcCall = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send","arguments":{}}}`

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

func decodeRPC(t testing.TB, resp *http.Response, body []byte) limRPC {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json; body %s", ct, body)
	}
	var r limRPC
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("JSON-RPC body %q: %v", body, err)
	}
	return r
}

// --- route rate limit -------------------------------------------------------

func TestLimitsRateLimitBurstThenRejects(t *testing.T) {
	u := okUpstream(t)
	p := startLim(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: ingress
    match: { path_prefix: / }
    upstream: up
    rate_limit: { rate: 5/1s, burst: 5 }
`, map[string]string{"UP": u.URL})

	const policyHeader = `"ingress";q=5;w=1`
	start := time.Now()
	var resps []*http.Response
	var bodies [][]byte
	for range 10 {
		resp, body := p.get(t, "/x")
		resps, bodies = append(resps, resp), append(bodies, body)
	}
	elapsed := time.Since(start)
	// The bucket refills one token per 200ms: on a machine so slow that
	// ten loopback requests take that long, more than five get through.
	allowed := 5 + int(elapsed/(200*time.Millisecond))
	if allowed != 5 {
		t.Logf("10 requests took %s: up to %d may be allowed", elapsed, allowed)
	}
	ok, limited := 0, 0
	for i, resp := range resps {
		if got := resp.Header.Get("RateLimit-Policy"); got != policyHeader {
			t.Errorf("request %d: RateLimit-Policy = %q, want %q", i, got, policyHeader)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
			if i < 5 {
				want := fmt.Sprintf(`"ingress";r=%d;t=1`, 4-i)
				if got := resp.Header.Get("RateLimit"); got != want {
					t.Errorf("request %d (allowed): RateLimit = %q, want %q", i, got, want)
				}
			}
			if resp.Header.Get("Retry-After") != "" {
				t.Errorf("request %d (allowed) has Retry-After %q", i, resp.Header.Get("Retry-After"))
			}
		case http.StatusTooManyRequests:
			limited++
			if i < 5 {
				t.Errorf("request %d was limited within the burst", i)
			}
			if got := resp.Header.Get("X-Breakwater-Error"); got != "rate_limited" {
				t.Errorf("request %d: X-Breakwater-Error = %q", i, got)
			}
			if got := resp.Header.Get("Retry-After"); got != "1" {
				t.Errorf("request %d: Retry-After = %q, want 1", i, got)
			}
			if got := resp.Header.Get("RateLimit"); got != `"ingress";r=0;t=1` {
				t.Errorf("request %d (limited): RateLimit = %q, want r=0;t=1", i, got)
			}
			pb := decodeProblem(t, resp, bodies[i])
			if pb.Status != 429 || pb.Route != "ingress" || pb.RetryAfter == nil || *pb.RetryAfter != 1 ||
				pb.RequestID == "" || pb.RequestID != resp.Header.Get("X-Request-Id") {
				t.Errorf("request %d: problem = %+v", i, pb)
			}
		default:
			t.Errorf("request %d: status %d: %s", i, resp.StatusCode, bodies[i])
		}
	}
	if ok < 5 || ok > allowed || ok+limited != 10 {
		t.Errorf("%d allowed and %d limited, want 5 and 5", ok, limited)
	}
	if got := u.Hits.Load(); got != int64(ok) {
		t.Errorf("upstream saw %d requests, want %d (only the allowed ones)", got, ok)
	}
	if got := p.metric(t, "breakwater_rate_limited_total", map[string]string{"route": "ingress", "scope": "route"}); got != float64(limited) {
		t.Errorf("breakwater_rate_limited_total{scope=route} = %v, want %d", got, limited)
	}
	if got := p.metric(t, "breakwater_requests_total", map[string]string{"route": "ingress", "code": "429", "outcome": "rejected"}); got != float64(limited) {
		t.Errorf("breakwater_requests_total{code=429,outcome=rejected} = %v, want %d", got, limited)
	}
}

func TestLimitsRateLimitKeysAreIsolated(t *testing.T) {
	u := okUpstream(t)
	t.Run("header", func(t *testing.T) {
		p := startLim(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: keyed
    match: { path_prefix: / }
    upstream: up
    rate_limit: { rate: 5/10s, burst: 3, key: "header:X-Client" }
`, map[string]string{"UP": u.URL})
		count := func(client string) (ok, limited int) {
			for range 4 {
				resp, _ := p.get(t, "/x", "X-Client", client)
				switch resp.StatusCode {
				case 200:
					ok++
				case 429:
					limited++
				}
			}
			return ok, limited
		}
		for _, client := range []string{"alice", "bob", "carol"} {
			if ok, limited := count(client); ok != 3 || limited != 1 {
				t.Errorf("client %s: %d allowed, %d limited; want its own burst: 3 and 1", client, ok, limited)
			}
		}
		// Requests without the header share one bucket (key "").
		if ok, limited := count(""); ok != 3 || limited != 1 {
			t.Errorf("no X-Client: %d allowed, %d limited; want 3 and 1", ok, limited)
		}
	})
	t.Run("client_ip", func(t *testing.T) {
		p := startLim(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: byip
    match: { path_prefix: / }
    upstream: up
    rate_limit: { rate: 5/10s, burst: 3, key: client_ip }
`, map[string]string{"UP": u.URL})
		// Two clients on two loopback source addresses.
		clientFrom := func(ip string) *http.Client {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			tr := &http.Transport{DialContext: d.DialContext}
			t.Cleanup(tr.CloseIdleConnections)
			return &http.Client{Transport: tr}
		}
		one, two := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
		if _, err := two.Get(p.URL + "/probe"); err != nil {
			t.Skipf("cannot send from 127.0.0.2: %v", err)
		}
		count := func(c *http.Client, xff string) (ok, limited int) {
			for range 4 {
				h := http.Header{}
				if xff != "" {
					// Not from a trusted proxy: must not pick the bucket.
					h.Set("X-Forwarded-For", xff)
				}
				resp, _ := p.call(t, c, http.MethodGet, "/x", h, "")
				switch resp.StatusCode {
				case 200:
					ok++
				case 429:
					limited++
				}
			}
			return ok, limited
		}
		if ok, limited := count(one, "10.0.0.1"); ok != 3 || limited != 1 {
			t.Errorf("127.0.0.1: %d allowed, %d limited; want 3 and 1", ok, limited)
		}
		if ok, limited := count(one, "10.0.0.2"); ok != 0 || limited != 4 {
			t.Errorf("127.0.0.1 with another X-Forwarded-For: %d allowed, %d limited; want 0 and 4 (same bucket)", ok, limited)
		}
		// 127.0.0.2 spent one token on the probe.
		if ok, limited := count(two, ""); ok != 2 || limited != 2 {
			t.Errorf("127.0.0.2: %d allowed, %d limited; want its own bucket: 2 and 2", ok, limited)
		}
	})
}

func TestLimitsRateLimitMaxWaitLetsACallerThroughLater(t *testing.T) {
	u := okUpstream(t)
	p := startLim(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: patient
    match: { path_prefix: / }
    upstream: up
    rate_limit: { rate: 2/1s, burst: 1, key: none, max_wait: 700ms }
`, map[string]string{"UP": u.URL})
	if resp, _ := p.get(t, "/first"); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	// Two at once: one token comes in 500ms (within max_wait), the next
	// in 1s (beyond it).
	type result struct {
		status     int
		retryAfter string
		took       time.Duration
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			start := time.Now()
			resp, err := p.client.Get(p.URL + "/x")
			if err != nil {
				t.Error(err)
				results <- result{}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(start)}
		}()
	}
	var waited, rejected *result
	for range 2 {
		r := <-results
		switch r.status {
		case 200:
			waited = &r
		case 429:
			rejected = &r
		default:
			t.Errorf("status %d", r.status)
		}
	}
	if waited == nil || rejected == nil {
		t.Fatalf("want one caller let through after a wait and one rejected; got %+v, %+v", waited, rejected)
	}
	t.Logf("the waiting caller was let through after %s, the other rejected after %s", waited.took, rejected.took)
	// Timers fire late on a loaded machine, never early.
	if waited.took < 350*time.Millisecond {
		t.Errorf("the waiting caller took %s, want about 500ms: it did not wait for the token", waited.took)
	}
	// Rejected at once, it is answered before the waiter's token comes
	// (500ms); rejected after waiting out max_wait, it would be answered
	// after it (700ms).
	if rejected.took >= waited.took {
		t.Errorf("the rejected caller took %s, the waiting one %s: want the rejection at once, before the wait ends", rejected.took, waited.took)
	}
	if rejected.retryAfter != "1" {
		t.Errorf("Retry-After = %q, want 1", rejected.retryAfter)
	}
	if got := u.Hits.Load(); got != 2 {
		t.Errorf("upstream saw %d requests, want 2", got)
	}
}

// --- upstream quota ---------------------------------------------------------

// slidingLimit is an upstream that answers 429 to any request beyond max
// in one second, counted over a sliding window, refused requests included.
//
// The window is a second less jitter. A quota of exactly the upstream's
// rate grants its tokens 1/rate apart, so max+1 grants span one second
// exactly, and the time from grant to arrival varies from one request to
// the next: by a millisecond or two on a quiet machine, by 40ms seen with
// -race on a busy one (a goroutine stalled between its grant and its
// write). A strictly counted second then sees max+1 arrivals now and
// then; no client can do better over a network. The quota's own part,
// that its grants never come closer than the rate even when its timers
// fire late, is pinned by ratelimit's TestQuotaLateSleeperHoldsBackTheNextOnes.
// minSpan reports the strict figure, for the log.
type slidingLimit struct {
	max      int
	jitter   time.Duration
	mu       sync.Mutex
	arrivals []time.Time
	all      []time.Time
	refused  atomic.Int64
}

func (s *slidingLimit) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	s.mu.Lock()
	kept := s.arrivals[:0]
	inWindow := 1
	for _, a := range s.arrivals {
		if age := now.Sub(a); age < time.Second {
			kept = append(kept, a)
			if age < time.Second-s.jitter {
				inWindow++
			}
		}
	}
	s.arrivals = append(kept, now)
	s.all = append(s.all, now)
	s.mu.Unlock()
	if inWindow > s.max {
		s.refused.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// minSpan is the shortest time between arrivals n apart.
func (s *slidingLimit) minSpan(n int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	span := time.Duration(math.MaxInt64)
	for i := n; i < len(s.all); i++ {
		span = min(span, s.all[i].Sub(s.all[i-n]))
	}
	return span
}

func TestLimitsQuotaKeepsConcurrentCallersWithinTheUpstreamLimit(t *testing.T) {
	lim := &slidingLimit{max: 10, jitter: 150 * time.Millisecond}
	u := httptest.NewServer(lim)
	t.Cleanup(u.Close)
	p := startLim(t, `
upstreams:
  api:
    url: "{{UP}}"
    quota: { rate: 10/1s, burst: 1 }
routes:
  - name: q
    match: { path_prefix: / }
    upstream: api
`, map[string]string{"UP": u.URL})

	// One request first, so that the measured ones find an idle
	// connection: a dial on the first attempt only would let the next
	// ones catch up with it at the upstream. Then the bucket refills.
	if resp, _ := p.get(t, "/warm"); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	time.Sleep(1100 * time.Millisecond)

	const clients, each = 8, 5
	var ok, other atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for range each {
				resp, err := p.client.Get(p.URL + "/x")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					other.Add(1)
					t.Errorf("status %d (%s)", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// 40 tokens at 10/s with a burst of 1: the first at once, 39 × 100ms,
	// about 3.9s. Timers fire late on a loaded machine, never early: the
	// lower bound holds anywhere; how much longer it took is a figure.
	t.Logf("%d requests in %s (about 3.9s due); 11 consecutive arrivals spanned at least %s", clients*each, elapsed, lim.minSpan(10))
	if got := lim.refused.Load(); got != 0 {
		t.Errorf("the upstream refused %d requests with 429, want 0", got)
	}
	if ok.Load() != clients*each || other.Load() != 0 {
		t.Errorf("%d succeeded, %d failed; want all %d to succeed", ok.Load(), other.Load(), clients*each)
	}
	if elapsed < 3*time.Second {
		t.Errorf("took %s, want about 3.9s: the quota did not pace the callers", elapsed)
	}
	if got := p.metric(t, "breakwater_rate_limited_total", map[string]string{"scope": "quota"}); got != 0 {
		t.Errorf("breakwater_rate_limited_total{scope=quota} = %v, want 0: every caller waited", got)
	}
}

func TestLimitsRetriesAndProbesSpendQuota(t *testing.T) {
	// Every other attempt fails with 503: a request takes two attempts.
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	// A quota that refills once an hour: the tokens left count the
	// tokens spent exactly.
	p := startLim(t, `
upstreams:
  api:
    url: "{{UP}}"
    quota: { rate: 1/1h, burst: 20, max_wait: 1s }
routes:
  - name: q
    match: { path_prefix: / }
    upstream: api
    retry: { attempts: 3, backoff: { initial: 1ms, max: 1ms }, on: [503] }
    circuit_breaker: { failure_threshold: 100 }
`, map[string]string{"UP": u.URL})

	spent := func() float64 { return 20 - p.quota(t, "api").Tokens }
	for i := range 5 {
		if resp, body := p.get(t, "/x"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	attempts := u.Hits.Load()
	if attempts != 10 {
		t.Errorf("upstream saw %d attempts, want 10 (5 requests × 2)", attempts)
	}
	if got := spent(); math.Abs(got-float64(attempts)) > 0.05 {
		t.Errorf("quota spent %.2f tokens for %d attempts; want one token per attempt", got, attempts)
	}
	if got := p.metric(t, "breakwater_upstream_attempts_total", map[string]string{"route": "q"}); got != float64(attempts) {
		t.Errorf("breakwater_upstream_attempts_total = %v, want %d", got, attempts)
	}

	// An open breaker spends nothing.
	forceBreaker(t, p.srv, "q", policy.Open)
	before := spent()
	resp, _ := p.get(t, "/x")
	if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Fatalf("with the breaker open: %d %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if got := spent(); math.Abs(got-before) > 0.05 {
		t.Errorf("an open breaker spent %.2f tokens, want 0", got-before)
	}
	forceBreaker(t, p.srv, "q", policy.Closed)

	// Spend the rest: 10 tokens left, two per request. The sixth request's
	// first attempt finds none and is quota_exhausted, never retried.
	for i := range 5 {
		if resp, body := p.get(t, "/x"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", 5+i, resp.StatusCode, body)
		}
	}
	hits := u.Hits.Load()
	resp, body := p.get(t, "/x")
	if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "quota_exhausted" {
		t.Fatalf("with the quota spent: %d %s", resp.StatusCode, body)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 3000 || ra > 3600 {
		t.Errorf("Retry-After = %q, want about an hour", resp.Header.Get("Retry-After"))
	}
	if got := u.Hits.Load(); got != hits {
		t.Errorf("%d attempts went upstream without a token", got-hits)
	}
	if got := p.metric(t, "breakwater_rate_limited_total", map[string]string{"route": "q", "scope": "quota"}); got != 1 {
		t.Errorf("breakwater_rate_limited_total{scope=quota} = %v, want 1", got)
	}
}

// pauseUpstream answers 429 with Retry-After: 2 to the first request on
// /slow, and records when every other request arrives.
type pauseUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	arrived []time.Time
	told    atomic.Bool
}

func startPauseUpstream(t *testing.T, retryAfter string) *pauseUpstream {
	u := &pauseUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" && u.told.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", retryAfter)
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		u.mu.Lock()
		u.arrived = append(u.arrived, time.Now())
		u.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func TestLimitsRetryAfterPausesEveryRouteOfTheUpstream(t *testing.T) {
	// The upstream asks for 3s. Each case's most is halfway between the
	// pause it should keep and the nearest wrong one (3s when capped or
	// not honoured, twice the pause when honoured): timers fire late on a
	// loaded machine, and a second of it still tells them apart.
	for _, tc := range []struct {
		name  string
		quota string
		pause time.Duration // what the second route should wait
		most  time.Duration
	}{
		{"honoured", `{ rate: 100/1s, burst: 10 }`, 3 * time.Second, 4500 * time.Millisecond},
		{"capped by max_pause", `{ rate: 100/1s, burst: 10, max_pause: 1s }`, time.Second, 2 * time.Second},
		{"not honoured", `{ rate: 100/1s, burst: 10, honor_retry_after: false }`, 0, 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startPauseUpstream(t, "3")
			p := startLim(t, `
upstreams:
  api:
    url: "{{UP}}"
    quota: `+tc.quota+`
routes:
  - name: first
    match: { path_prefix: /slow }
    upstream: api
  - name: second
    match: { path_prefix: /other }
    upstream: api
  - name: hasty
    match: { path_prefix: /hasty }
    upstream: api
    timeout: 500ms
`, map[string]string{"UP": u.URL})
			events := p.hub.Subscribe(16)
			defer events.Close()
			resp, _ := p.get(t, "/slow")
			told := time.Now()
			if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
				t.Fatalf("first route: %d Retry-After %q; want the upstream's 429 passed through", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if tc.pause > 0 {
				if q := p.quota(t, "api"); q.PausedFor <= 0 || q.PausedFor > tc.pause {
					t.Errorf("quota paused for %v, want in (0, %v]", q.PausedFor, tc.pause)
				}
				// A route whose timeout ends before the pause is told so at
				// once, with the rest of the pause as Retry-After. Waiting
				// out its 500ms instead would answer 504 timeout (the quota
				// returns the context's error), so the kind is the check.
				start := time.Now()
				resp, body := p.get(t, "/hasty")
				want := strconv.Itoa(int(tc.pause / time.Second))
				if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "quota_exhausted" ||
					resp.Header.Get("Retry-After") != want {
					t.Errorf("during the pause, a 500ms route: %d %q Retry-After %q after %s; want 503 quota_exhausted, Retry-After %s, at once: %s",
						resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), resp.Header.Get("Retry-After"), time.Since(start), want, body)
				}
			}
			resp, _ = p.get(t, "/other")
			if resp.StatusCode != 200 {
				t.Fatalf("second route: %d", resp.StatusCode)
			}
			u.mu.Lock()
			arrived := u.arrived[0]
			u.mu.Unlock()
			// The dashboard is told the pause in force, not what was asked.
			var paused []float64
			for len(events.C) > 0 {
				var ev struct {
					Type string
					Data struct {
						PauseSeconds float64 `json:"pause_seconds"`
					}
				}
				if m := <-events.C; json.Unmarshal(m.JSON, &ev) == nil && ev.Type == "quota_paused" {
					paused = append(paused, ev.Data.PauseSeconds)
				}
			}
			if tc.pause == 0 && len(paused) != 0 {
				t.Errorf("quota_paused events %v, want none: nothing was paused", paused)
			}
			if tc.pause > 0 && (len(paused) != 1 || paused[0] > tc.pause.Seconds() || paused[0] < tc.pause.Seconds()-0.1) {
				t.Errorf("quota_paused events say %v seconds, want one of %v", paused, tc.pause.Seconds())
			}
			gap := arrived.Sub(told)
			// The pause starts when breakwater sees the 429, a little
			// before the client does.
			t.Logf("the second route reached the upstream %s after the 429 (pause %s)", gap, tc.pause)
			if gap < tc.pause-200*time.Millisecond || gap > tc.most {
				t.Errorf("the second route reached the upstream %s after the 429, want about %s (at most %s)", gap, tc.pause, tc.most)
			}
		})
	}
}

func TestLimitsQuotaWaitBeyondTheRouteTimeoutFailsAtOnce(t *testing.T) {
	u := okUpstream(t)
	p := startLim(t, `
upstreams:
  api:
    url: "{{UP}}"
    quota: { rate: 1/10s, burst: 1, max_wait: 30s }
routes:
  - name: hasty
    match: { path_prefix: / }
    upstream: api
    timeout: 2s
`, map[string]string{"UP": u.URL})
	if resp, _ := p.get(t, "/x"); resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	// The next token is 10s away: more than the route's 2s timeout.
	start := time.Now()
	resp, body := p.get(t, "/x")
	took := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "quota_exhausted" {
		t.Fatalf("got %d %q: %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), body)
	}
	// Waiting out the 2s timeout would end in 504 timeout, checked above;
	// half of it tells "at once" from "just before the timeout".
	if took > time.Second {
		t.Errorf("took %s, want at once (well under the 2s timeout)", took)
	}
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if ra < 9 || ra > 10 {
		t.Errorf("Retry-After = %q, want 9–10", resp.Header.Get("Retry-After"))
	}
	if pb := decodeProblem(t, resp, body); pb.Status != 503 || pb.RetryAfter == nil || *pb.RetryAfter != ra {
		t.Errorf("problem = %+v", pb)
	}
	if got := u.Hits.Load(); got != 1 {
		t.Errorf("upstream saw %d requests, want 1", got)
	}
}

// --- JSON-RPC forms ---------------------------------------------------------

func TestLimitsJSONRPCForms(t *testing.T) {
	u := okUpstream(t)
	p := startLim(t, `
upstreams:
  api:
    url: "{{UP}}"
    quota: { rate: 1/10s, burst: 1 }
  app: { url: "{{UP}}" }
routes:
  - name: mcp-limited
    match: { path: /limited }
    upstream: app
    rate_limit: { rate: 1/10s, burst: 1, key: none }
  - name: mcp-quota
    match: { path: /quota }
    upstream: api
    timeout: 2s
`, map[string]string{"UP": u.URL})

	for _, tc := range []struct {
		path   string
		status int
		kind   string
	}{
		{"/limited", http.StatusTooManyRequests, "rate_limited"},
		{"/quota", http.StatusServiceUnavailable, "quota_exhausted"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			if resp, _ := p.call(t, nil, http.MethodPost, tc.path, jsonHeader, rpcCall); resp.StatusCode != 200 {
				t.Fatalf("first call: %d", resp.StatusCode)
			}
			resp, body := p.call(t, nil, http.MethodPost, tc.path, jsonHeader, rpcCall)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Breakwater-Error") != tc.kind {
				t.Fatalf("second call: %d %q, want %d %s: %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), tc.status, tc.kind, body)
			}
			r := decodeRPC(t, resp, body)
			ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if r.JSONRPC != "2.0" || string(r.ID) != "7" || r.Error.Code != -31429 || r.Error.Data.Kind != tc.kind ||
				r.Error.Data.RetryAfter == nil || *r.Error.Data.RetryAfter != ra || ra < 9 || ra > 10 ||
				r.Error.Data.RequestID != resp.Header.Get("X-Request-Id") {
				t.Errorf("JSON-RPC error %s (Retry-After %q)", body, resp.Header.Get("Retry-After"))
			}
			if !strings.Contains(r.Error.Message, "Try again in") {
				t.Errorf("message %q does not say when to try again", r.Error.Message)
			}
		})
	}
}
