package policy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// What every test here stands on: real upstreams on loopback sockets, a
// pipeline built from YAML exactly as the proxy builds it, an observer
// that counts, and a check that nothing leaked.

// checkLeaks fails the test if goroutines outlive it. Call it first, so
// that its cleanup runs last, after servers and transports are closed.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				var buf bytes.Buffer
				_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Errorf("goroutines: %d before, %d after the test:\n%s", before, runtime.NumGoroutine(), buf.String())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// upstream is an httptest server that counts hits, concurrency and
// connections.
type upstream struct {
	*httptest.Server
	hits        atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	newConns    atomic.Int64
	closedConns atomic.Int64
}

// newUpstream serves h, which gets the 1-based number of the hit.
func newUpstream(t *testing.T, h func(n int64, w http.ResponseWriter, r *http.Request)) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.hits.Add(1)
		in := u.inFlight.Add(1)
		defer u.inFlight.Add(-1)
		for m := u.maxInFlight.Load(); in > m && !u.maxInFlight.CompareAndSwap(m, in); m = u.maxInFlight.Load() {
		}
		h(n, w, r)
	}))
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.newConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.closedConns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// openConns is the number of connections the upstream has not seen closed.
func (u *upstream) openConns() int64 { return u.newConns.Load() - u.closedConns.Load() }

// deadAddr returns a loopback address that refuses connections: it was
// listened on, then closed.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// counter is a policy.Observer that counts what it is told.
type counter struct {
	mu          sync.Mutex
	attempts    map[string]int // by result
	retries     map[string]int // by reason
	budget      int
	hedges      map[string]int
	transitions []string // "from>to"
	inFlight    []int
	bhRejected  int
}

func newCounter() *counter {
	return &counter{attempts: map[string]int{}, retries: map[string]int{}, hedges: map[string]int{}}
}

func (c *counter) Attempt(_, _, result string, _ time.Duration) {
	c.mu.Lock()
	c.attempts[result]++
	c.mu.Unlock()
}

func (c *counter) Retry(_, reason string) {
	c.mu.Lock()
	c.retries[reason]++
	c.mu.Unlock()
}

func (c *counter) BudgetExhausted(string) {
	c.mu.Lock()
	c.budget++
	c.mu.Unlock()
}

func (c *counter) Hedge(_, result string) {
	c.mu.Lock()
	c.hedges[result]++
	c.mu.Unlock()
}

func (c *counter) BreakerChanged(_ string, from, to policy.State) {
	c.mu.Lock()
	c.transitions = append(c.transitions, string(from)+">"+string(to))
	c.mu.Unlock()
}

func (c *counter) BulkheadInFlight(_ string, n int) {
	c.mu.Lock()
	c.inFlight = append(c.inFlight, n)
	c.mu.Unlock()
}

func (c *counter) BulkheadRejected(string) {
	c.mu.Lock()
	c.bhRejected++
	c.mu.Unlock()
}

func (c *counter) QuotaWaited(string, time.Duration)            {}
func (c *counter) QuotaExhausted(string, string, time.Duration) {}
func (c *counter) QuotaPaused(string, time.Duration)            {}

func (c *counter) totalAttempts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.attempts {
		n += v
	}
	return n
}

func (c *counter) attemptsBy(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts[result]
}

func (c *counter) hedgesBy(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hedges[result]
}

func (c *counter) transitionList() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.transitions, " ")
}

// bodyTracker wraps a transport and counts response bodies it handed out
// that were never closed: a discarded response left open pins a connection.
type bodyTracker struct {
	base   http.RoundTripper
	open   atomic.Int64
	opened atomic.Int64
}

func (b *bodyTracker) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.base.RoundTrip(r)
	if resp != nil {
		b.open.Add(1)
		b.opened.Add(1)
		resp.Body = &trackedBody{ReadCloser: resp.Body, t: b}
	}
	return resp, err
}

type trackedBody struct {
	io.ReadCloser
	t    *bodyTracker
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() { b.t.open.Add(-1) })
	return b.ReadCloser.Close()
}

// rig is one route's pipeline over a real transport, with its parts.
type rig struct {
	pipeline  *policy.Pipeline
	obs       *counter
	client    *http.Client
	breaker   *policy.Breaker
	bulkhead  *policy.Bulkhead
	transport *http.Transport
	tracker   *bodyTracker
}

// parseConfig parses a config and fails the test on any error.
func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, _, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// newRig builds the pipeline of cfg's first route the way the proxy does:
// its breaker (the route's or the upstream's), bulkhead and quota. When
// ups are given, its cleanup checks that every response body was closed
// and that, once idle connections are closed, no upstream connection is
// left open.
func newRig(t *testing.T, cfg *config.Config, ups ...*upstream) *rig {
	t.Helper()
	rc := cfg.Routes[0]
	e := rc.Effective
	obs := newCounter()
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	rg := &rig{obs: obs, transport: tr, tracker: &bodyTracker{base: tr}}
	var parts policy.Parts
	if cb := e.CircuitBreaker; cb != nil {
		scope := "route"
		if e.SharedBreaker {
			scope = "upstream"
		}
		rg.breaker = policy.NewBreaker(rc.Name, scope, cb, obs)
		parts.Breaker = rg.breaker
	}
	if b := e.Bulkhead; b != nil {
		rg.bulkhead = policy.NewBulkhead(b)
		parts.Bulkhead = rg.bulkhead
	}
	if q := cfg.Upstreams[rc.Upstream].Quota; q != nil {
		parts.Quota = ratelimit.NewQuota(*q)
	}
	rg.pipeline = policy.NewPipeline(rc, rg.tracker, parts, obs)
	rg.client = &http.Client{Transport: rg.pipeline}
	t.Cleanup(func() {
		if n := rg.tracker.open.Load(); n != 0 {
			t.Errorf("%d of %d upstream response bodies were never closed", n, rg.tracker.opened.Load())
		}
		tr.CloseIdleConnections()
		for _, u := range ups {
			deadline := time.Now().Add(3 * time.Second)
			for u.openConns() > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
				tr.CloseIdleConnections()
			}
			if n := u.openConns(); n > 0 {
				t.Errorf("%d upstream connections still open after closing idle ones (%d opened)", n, u.newConns.Load())
			}
		}
	})
	return rg
}

// routeYAML is a one-upstream, one-route config; route holds the route's
// policy keys, indented by four spaces.
func routeYAML(url, route string) string {
	return `
upstreams:
  up: { url: "` + url + `" }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: up
` + route
}

// get sends a GET through the rig and returns status and body.
func (rg *rig) get(t *testing.T, url string) (int, []byte, error) {
	t.Helper()
	resp, err := rg.client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// waitUntil polls cond until it holds or the time is up.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
