package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
)

// Active health checks and degraded mode: an upstream that its checker
// finds unhealthy, or that an operator put in cache_only mode, is failed
// fast (circuit_open, stale cache or fallback first) before the pipeline,
// without waiting for user traffic to trip a breaker.

// Upstream modes, as POST /upstreams/{name}?mode= sets them.
const (
	ModeNormal    = "normal"
	ModeCacheOnly = "cache_only"
)

// Health check results, as /health shows them.
const (
	HealthUnknown   = "unknown" // no check has finished yet: traffic flows
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// HealthObserver is the part of Observer that hears of upstream health
// changes and mode changes (observe.Fanout implements it, for /events).
type HealthObserver interface {
	// UpstreamHealthChanged reports a health check state change; result is
	// the check that decided it ("ok", "status 503", "connect_error"…).
	UpstreamHealthChanged(upstream, from, to, result string)
	// UpstreamModeChanged reports an operator's mode change.
	UpstreamModeChanged(upstream, mode string)
}

// UpstreamMode is an upstream's operating mode. It belongs to the upstream
// name and is carried across every reload that keeps the upstream. The
// zero value is normal mode.
type UpstreamMode struct {
	cacheOnly atomic.Bool
}

// CacheOnly reports whether the upstream's routes answer from cache and
// fallback only.
func (m *UpstreamMode) CacheOnly() bool { return m.cacheOnly.Load() }

// String is the mode's name: normal or cache_only.
func (m *UpstreamMode) String() string {
	if m.CacheOnly() {
		return ModeCacheOnly
	}
	return ModeNormal
}

// SetUpstreamMode sets the named upstream's mode (normal or cache_only);
// false when the running config has no such upstream.
func (s *Server) SetUpstreamMode(name, mode string) bool {
	t := s.table.Load()
	if t == nil || t.upstreams[name] == nil {
		return false
	}
	if t.upstreams[name].mode.cacheOnly.Swap(mode == ModeCacheOnly) != (mode == ModeCacheOnly) {
		s.metrics.UpstreamModeChanged(name, mode)
	}
	return true
}

// HealthStatus is one upstream's health check state.
type HealthStatus struct {
	// Status is unknown (no check finished yet), healthy or unhealthy.
	Status string
	// Result is the last check's outcome: "ok", "status 503",
	// "timeout", "connect_error" ("" before the first check).
	Result string
	// Latency is how long the last check took.
	Latency time.Duration
	// LastCheck and LastChange are zero until they happen; NextCheck is
	// when the next check starts.
	LastCheck, LastChange, NextCheck time.Time
	// Failures and Successes count the checks in a row of each kind.
	Failures, Successes int
}

// checkSettings are what make a checker: a reload that changes none of
// them keeps the checker and its state.
type checkSettings struct {
	Check     config.HealthCheck
	URL       string
	Transport transportSettings
}

// HealthChecker asks one upstream's health path on its own goroutine,
// through the upstream's base transport (never the policy pipeline: a
// check must neither spend quota nor trip a breaker, nor be retried).
type HealthChecker struct {
	upstream string
	url      string
	cfg      config.HealthCheck
	rt       http.RoundTripper
	obs      HealthObserver // nil: changes are not reported

	down atomic.Bool // unhealthy: the request path reads only this

	mu sync.Mutex
	st HealthStatus

	start, stop sync.Once
	quit        chan struct{}
	done        chan struct{}
}

func newHealthChecker(upstream string, s checkSettings, rt http.RoundTripper, obs HealthObserver) *HealthChecker {
	return &HealthChecker{
		upstream: upstream, url: strings.TrimSuffix(s.URL, "/") + s.Check.Path, cfg: s.Check, rt: rt, obs: obs,
		st: HealthStatus{Status: HealthUnknown}, quit: make(chan struct{}), done: make(chan struct{}),
	}
}

// Status is the checker's current state.
func (c *HealthChecker) Status() HealthStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Unhealthy reports whether the upstream is failed fast; retryAfter is
// the time until the next check.
func (c *HealthChecker) Unhealthy() (down bool, retryAfter time.Duration) {
	if c == nil || !c.down.Load() {
		return false, 0
	}
	c.mu.Lock()
	next := c.st.NextCheck
	c.mu.Unlock()
	return true, max(time.Until(next), time.Second)
}

var _ lifecycle.Closer = (*HealthChecker)(nil)

// run starts the goroutine once; Close stops it.
func (c *HealthChecker) run() {
	c.start.Do(func() { go c.loop() })
}

// Close stops the checks and waits for the one in progress to end (it is
// cancelled), or for ctx to end. The registry calls it when no config
// has the checker any more.
func (c *HealthChecker) Close(ctx context.Context) error {
	c.stop.Do(func() { close(c.quit) })
	c.start.Do(func() { close(c.done) }) // never started: nothing to wait for
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *HealthChecker) loop() {
	defer close(c.done)
	interval := c.cfg.Interval.D()
	// A random first delay spreads the checks of many upstreams (and of
	// many replicas) over the interval rather than all at start.
	wait := rand.N(interval) // #nosec G404 -- jitter, not security
	for {
		c.mu.Lock()
		c.st.NextCheck = time.Now().Add(wait)
		c.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-c.quit:
			timer.Stop()
			return
		case <-timer.C:
		}
		c.check()
		// ±10% per interval: replicas started together drift apart.
		wait = interval - interval/10 + rand.N(interval/5+1) // #nosec G404 -- jitter
	}
}

// check asks the health path once and records the answer.
func (c *HealthChecker) check() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout.D())
	defer cancel()
	go func() { // a Close during a slow check ends it
		select {
		case <-c.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	began := time.Now()
	result := c.ask(ctx)
	latency := time.Since(began)
	select {
	case <-c.quit:
		return // stopped mid-check: the answer says nothing of the upstream
	default:
	}
	c.mu.Lock()
	st := &c.st
	st.Result, st.Latency, st.LastCheck = result, latency, time.Now()
	from := st.Status
	if result == "ok" {
		st.Successes, st.Failures = st.Successes+1, 0
		if st.Status != HealthHealthy && (st.Status == HealthUnknown || st.Successes >= c.cfg.HealthyAfter) {
			st.Status = HealthHealthy
		}
	} else {
		st.Failures, st.Successes = st.Failures+1, 0
		if st.Status != HealthUnhealthy && st.Failures >= c.cfg.UnhealthyAfter {
			st.Status = HealthUnhealthy
		}
	}
	to := st.Status
	if to != from {
		st.LastChange = st.LastCheck
	}
	c.down.Store(to == HealthUnhealthy)
	c.mu.Unlock()
	// The first check's verdict (unknown → healthy) is no news.
	if to != from && c.obs != nil && !(from == HealthUnknown && to == HealthHealthy) {
		c.obs.UpstreamHealthChanged(c.upstream, from, to, result)
	}
}

// ask sends one GET and names its outcome.
func (c *HealthChecker) ask(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return "error"
	}
	req.Header.Set("User-Agent", "breakwater-health-check")
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return "timeout"
		default:
			return "connect_error"
		}
	}
	// Drained (a little) so the connection is reused, then closed.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return "ok"
	}
	return "status " + strconv.Itoa(resp.StatusCode)
}

// failFast answers a request whose upstream must not be asked (unhealthy,
// or in cache_only mode): from a stale entry or the fallback, else
// circuit_open; true when it answered. The fresh cache already had its
// turn (serveCached).
func (s *Server) failFast(r *http.Request, rq *request, rt *route) bool {
	var retryAfter time.Duration
	switch down, ra := rt.up.check.Unhealthy(); {
	case rt.up.mode.CacheOnly():
		rq.detail = "The upstream " + rt.up.name + " is in cache_only mode: only cached answers are served. Try again later."
	case down:
		retryAfter = ra
		rq.detail = "The upstream " + rt.up.name + " failed its health checks; it is not asked until they pass again."
	default:
		return false
	}
	rq.capture.release()
	if !s.answerInstead(r, rq, KindCircuitOpen) {
		s.reject(rq, KindCircuitOpen, retryAfter)
	}
	return true
}

// startChecks starts t's health checkers that are not running yet. Those
// a reload dropped are stopped by the registry's commit.
func startChecks(t *table) {
	for _, up := range t.upstreams {
		if up.check != nil {
			up.check.run()
		}
	}
}
