// Package health decides whether an upstream is to be asked at all: its
// active health checks (a Checker per upstream, on a goroutine of its own)
// and the operator's degraded mode (Mode: cache_only). The request path
// reads one atomic of each and fails fast (circuit_open, stale cache or
// fallback first) without waiting for user traffic to trip a breaker.
//
// It sits beside transport, not in proxy: a check judges the connections
// it goes through (transport.Base), and Part 3's several targets per
// upstream give each target a base transport, a checker and outlier state
// of its own. Checkers are lifecycle items: a reload that keeps their
// Settings keeps them, and the registry closes the ones it drops.
package health

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
	"github.com/breakwater-proxy/breakwater/transport"
)

// Upstream modes, as POST /upstreams/{name}?mode= sets them.
const (
	ModeNormal    = "normal"
	ModeCacheOnly = "cache_only"
)

// Health check results, as /health shows them.
const (
	Unknown   = "unknown" // no check has finished yet: traffic flows
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
)

// Observer hears of upstream health changes and mode changes
// (observe.Fanout does, for /events).
type Observer interface {
	// UpstreamHealthChanged reports a health check state change; result is
	// the check that decided it ("ok", "status 503", "connect_error"…).
	UpstreamHealthChanged(upstream, from, to, result string)
	// UpstreamModeChanged reports an operator's mode change.
	UpstreamModeChanged(upstream, mode string)
}

// Mode is an upstream's operating mode. It belongs to the upstream name
// and is carried across every reload that keeps the upstream. Its zero
// value is normal mode, reported to nobody.
type Mode struct {
	upstream  string
	obs       Observer // nil: changes are not reported
	cacheOnly atomic.Bool
}

// NewMode is the normal mode of the named upstream; obs (nil: none) hears
// of its changes.
func NewMode(upstream string, obs Observer) *Mode {
	return &Mode{upstream: upstream, obs: obs}
}

// CacheOnly reports whether the upstream's routes answer from cache and
// fallback only.
func (m *Mode) CacheOnly() bool { return m.cacheOnly.Load() }

// String is the mode's name: normal or cache_only.
func (m *Mode) String() string {
	if m.CacheOnly() {
		return ModeCacheOnly
	}
	return ModeNormal
}

// Set sets the mode (ModeCacheOnly; anything else is normal) and reports
// a change.
func (m *Mode) Set(mode string) {
	cacheOnly := mode == ModeCacheOnly
	if m.cacheOnly.Swap(cacheOnly) != cacheOnly && m.obs != nil {
		m.obs.UpstreamModeChanged(m.upstream, m.String())
	}
}

// Status is one upstream's health check state.
type Status struct {
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

// Settings are what make a checker, and its lifecycle registry key: a
// reload that changes none of them keeps the checker and its state.
type Settings struct {
	Check config.HealthCheck
	// URL is the upstream's; the check asks URL + Check.Path.
	URL string
	// Transport is the base transport's key: the checks go through it, so
	// a new transport makes a new checker.
	Transport transport.Config
}

// Checker asks one upstream's health path on its own goroutine, through
// the upstream's base transport (never the policy pipeline: a check must
// neither spend quota nor trip a breaker, nor be retried).
type Checker struct {
	upstream string
	url      string
	cfg      config.HealthCheck
	rt       http.RoundTripper
	obs      Observer // nil: changes are not reported

	down atomic.Bool // unhealthy: the request path reads only this

	mu sync.Mutex
	st Status

	start, stop sync.Once
	quit        chan struct{}
	done        chan struct{}
}

// NewChecker makes the named upstream's checker, which asks through rt
// (its base transport) and reports changes to obs (nil: to nobody). Start
// starts it.
func NewChecker(upstream string, s Settings, rt http.RoundTripper, obs Observer) *Checker {
	return &Checker{
		upstream: upstream, url: strings.TrimSuffix(s.URL, "/") + s.Check.Path, cfg: s.Check, rt: rt, obs: obs,
		st: Status{Status: Unknown}, quit: make(chan struct{}), done: make(chan struct{}),
	}
}

// Status is the checker's current state.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Unhealthy reports whether the upstream is failed fast; retryAfter is
// the time until the next check. A nil Checker (no health_check) is never
// unhealthy.
func (c *Checker) Unhealthy() (down bool, retryAfter time.Duration) {
	if c == nil || !c.down.Load() {
		return false, 0
	}
	c.mu.Lock()
	next := c.st.NextCheck
	c.mu.Unlock()
	return true, max(time.Until(next), time.Second)
}

var _ lifecycle.Closer = (*Checker)(nil)

// Start starts the checks, once: a reload that keeps the checker calls it
// again harmlessly. Close stops them.
func (c *Checker) Start() {
	c.start.Do(func() { go c.loop() })
}

// Close stops the checks and waits for the one in progress to end (it is
// cancelled), or for ctx to end. The registry calls it when no config
// has the checker any more.
func (c *Checker) Close(ctx context.Context) error {
	c.stop.Do(func() { close(c.quit) })
	c.start.Do(func() { close(c.done) }) // never started: nothing to wait for
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Checker) loop() {
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
func (c *Checker) check() {
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
		if st.Status != Healthy && (st.Status == Unknown || st.Successes >= c.cfg.HealthyAfter) {
			st.Status = Healthy
		}
	} else {
		st.Failures, st.Successes = st.Failures+1, 0
		if st.Status != Unhealthy && st.Failures >= c.cfg.UnhealthyAfter {
			st.Status = Unhealthy
		}
	}
	to := st.Status
	if to != from {
		st.LastChange = st.LastCheck
	}
	c.down.Store(to == Unhealthy)
	c.mu.Unlock()
	// The first check's verdict (unknown → healthy) is no news.
	if to != from && c.obs != nil && !(from == Unknown && to == Healthy) {
		c.obs.UpstreamHealthChanged(c.upstream, from, to, result)
	}
}

// ask sends one GET and names its outcome.
func (c *Checker) ask(ctx context.Context) string {
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
