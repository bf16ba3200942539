package policy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// What every test here stands on: real upstreams on loopback sockets, a
// pipeline built from YAML exactly as the proxy builds it, an observer
// that counts, and a check that nothing leaked.

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

func (c *counter) QuotaWaited(string, time.Duration)                          {}
func (c *counter) QuotaExhausted(string, string, time.Duration)               {}
func (c *counter) QuotaPaused(string, time.Duration)                          {}
func (c *counter) QueueWaiting(string, string, policy.Priority, int)          {}
func (c *counter) QueueWaited(string, string, policy.Priority, time.Duration) {}

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
	cfg, _, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
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
func newRig(t *testing.T, cfg *config.Config, ups ...*testkit.Upstream) *rig {
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
		rg.bulkhead = policy.NewBulkhead(rc.Name, b, obs)
		parts.Bulkhead = rg.bulkhead
	}
	if q := cfg.Upstreams[rc.Upstream].Quota; q != nil {
		parts.Quota = ratelimit.NewQuota(*q, ratelimit.NewBucket(*q), nil)
	}
	rg.pipeline = policy.NewPipeline(rc, rg.tracker, parts, obs, traceFrom)
	rg.client = &http.Client{Transport: rg.pipeline}
	t.Cleanup(func() {
		// Discarded bodies are drained in the background, for at most
		// drain.MaxTime: give them that and more.
		deadline := time.Now().Add(2 * time.Second)
		for rg.tracker.open.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := rg.tracker.open.Load(); n != 0 {
			t.Errorf("%d of %d upstream response bodies were never closed", n, rg.tracker.opened.Load())
		}
		tr.CloseIdleConnections()
		for _, u := range ups {
			deadline := time.Now().Add(3 * time.Second)
			for u.OpenConns() > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
				tr.CloseIdleConnections()
			}
			if n := u.OpenConns(); n > 0 {
				t.Errorf("%d upstream connections still open after closing idle ones (%d opened)", n, u.NewConns.Load())
			}
		}
	})
	return rg
}

type traceKey struct{}

// withTrace returns ctx carrying t, for the rig's pipeline to fill.
func withTrace(ctx context.Context, t *policy.Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// traceFrom is the rig's trace function, as the proxy supplies one.
func traceFrom(ctx context.Context) *policy.Trace {
	t, _ := ctx.Value(traceKey{}).(*policy.Trace)
	return t
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
