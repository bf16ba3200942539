package admin

import (
	"slices"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// The admin queries: what /breakers, /health, /routes and /cache/purge
// compute from the proxy's live handles (proxy.Live). The proxy owns the
// state; this file only presents it.

// breakerStatuses reports every breaker of the running config.
func breakerStatuses(l proxy.Live) []policy.BreakerStatus {
	out := make([]policy.BreakerStatus, 0, len(l.Breakers))
	for _, b := range l.Breakers {
		out = append(out, b.Status())
	}
	return out
}

// findBreaker is the running breaker of that name, or nil.
func findBreaker(l proxy.Live, name string) *policy.Breaker {
	for _, b := range l.Breakers {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// UpstreamHealth is one upstream's health from its breakers' states.
type UpstreamHealth struct {
	Name string `json:"name"`
	// Status is healthy, degraded or unhealthy.
	Status string `json:"status"`
	// Breakers maps each breaker in front of the upstream to its state.
	Breakers map[string]string `json:"breakers"`
	// Quota is nil when the upstream has none.
	Quota *QuotaStatus `json:"quota,omitempty"`
	// Token is nil when the upstream has no auth.oauth2.
	Token *TokenStatus `json:"token,omitempty"`
	// Mode is normal or cache_only (POST /upstreams/{name}?mode=).
	Mode string `json:"mode"`
	// Check is nil when the upstream has no health_check.
	Check *CheckStatus `json:"health_check,omitempty"`
}

// CheckStatus is an upstream's active health check state.
type CheckStatus struct {
	// Status is unknown (no check finished yet), healthy or unhealthy.
	Status string `json:"status"`
	// Result is the last check's outcome: ok, "status 503", timeout,
	// connect_error ("" before the first check).
	Result    string  `json:"result"`
	LatencyMs float64 `json:"latency_ms"`
	// LastCheck and LastChange are null until they happen.
	LastCheck  *time.Time `json:"last_check"`
	LastChange *time.Time `json:"last_change"`
	// NextCheckIn is the time until the next check, in seconds.
	NextCheckIn float64 `json:"next_check_in_seconds"`
	Failures    int     `json:"consecutive_failures"`
	Successes   int     `json:"consecutive_successes"`
}

// checkStatus reads a health checker; an upstream that fails its checks
// is unhealthy whatever its breakers say.
func checkStatus(c *health.Checker, h *UpstreamHealth) {
	st := c.Status()
	cs := &CheckStatus{Status: st.Status, Result: st.Result, LatencyMs: float64(st.Latency.Microseconds()) / 1000,
		NextCheckIn: max(time.Until(st.NextCheck).Seconds(), 0), Failures: st.Failures, Successes: st.Successes}
	if !st.LastCheck.IsZero() {
		cs.LastCheck = &st.LastCheck
	}
	if !st.LastChange.IsZero() {
		cs.LastChange = &st.LastChange
	}
	if st.Status == health.Unhealthy {
		h.Status = "unhealthy"
	}
	h.Check = cs
}

// TokenStatus is an upstream OAuth2 token's state: never the token.
type TokenStatus struct {
	// Valid: a token is held and has not expired.
	Valid bool `json:"valid"`
	// ExpiresIn is the time left on it in seconds; nil when none is held
	// or the server gave no expiry.
	ExpiresIn *float64 `json:"expires_in_seconds"`
	// LastError is what the token endpoint said last time it failed
	// (status and OAuth2 error code); "" after a success.
	LastError string `json:"last_error,omitempty"`
}

// tokenStatus reads a token source; an upstream whose token cannot be
// had is degraded (its requests get upstream_auth_failed).
func tokenStatus(src *auth.Source, h *UpstreamHealth) {
	st := src.Status()
	ts := &TokenStatus{Valid: st.Valid, LastError: st.LastError}
	if st.Valid && !st.Expiry.IsZero() {
		left := max(time.Until(st.Expiry).Seconds(), 0)
		ts.ExpiresIn = &left
	}
	if !st.Valid && st.LastError != "" && h.Status == "healthy" {
		h.Status = "degraded"
	}
	h.Token = ts
}

// QuotaStatus is an upstream quota's state.
type QuotaStatus struct {
	Tokens    float64 `json:"tokens"`
	Burst     int     `json:"burst"`
	Rate      string  `json:"rate"`
	PausedFor float64 `json:"paused_for_seconds"`
	Exhausted uint64  `json:"exhausted"`
	// Waiting is how many attempts are queued for a token now.
	Waiting int `json:"waiting"`
}

// upstreamHealth reports each upstream: healthy when every breaker in front
// of it is closed, degraded when one is open or half-open, unhealthy when
// all are open.
func upstreamHealth(l proxy.Live) []UpstreamHealth {
	byUp := map[string]map[string]string{}
	open := map[string]int{}
	for _, rt := range l.Routes {
		if rt.Breaker == nil {
			continue
		}
		m := byUp[rt.Upstream]
		if m == nil {
			m = map[string]string{}
			byUp[rt.Upstream] = m
		}
		st := rt.Breaker.State()
		if _, seen := m[rt.Breaker.Name]; !seen {
			m[rt.Breaker.Name] = string(st)
			if st != policy.Closed {
				open[rt.Upstream]++
			}
		}
	}
	out := make([]UpstreamHealth, 0, len(l.Upstreams))
	for _, u := range l.Upstreams {
		h := UpstreamHealth{Name: u.Name, Status: "healthy", Breakers: byUp[u.Name]}
		if n := open[u.Name]; n > 0 {
			h.Status = "degraded"
			if n == len(byUp[u.Name]) && allOpen(byUp[u.Name]) {
				h.Status = "unhealthy"
			}
		}
		if u.Quota != nil {
			h.Quota = quotaStatus(u.Quota.Snapshot())
		}
		if u.Token != nil {
			tokenStatus(u.Token, &h)
		}
		if u.Mode != nil {
			h.Mode = u.Mode.String()
			if u.Mode.CacheOnly() && h.Status == "healthy" {
				h.Status = "degraded" // answering from cache only
			}
		}
		if u.Check != nil {
			checkStatus(u.Check, &h)
		}
		out = append(out, h)
	}
	return out
}

func allOpen(m map[string]string) bool {
	for _, st := range m {
		if st != string(policy.Open) {
			return false
		}
	}
	return true
}

func quotaStatus(s ratelimit.QuotaSnapshot) *QuotaStatus {
	return &QuotaStatus{Tokens: s.Tokens, Burst: s.Burst, Rate: s.Rate, PausedFor: s.PausedFor.Seconds(), Exhausted: s.Exhausted, Waiting: s.Waiting}
}

// RouteStatus is one route's live policy state, for the dashboard.
type RouteStatus struct {
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	// Breaker is the name of the breaker in front of the route ("" = none).
	Breaker      string `json:"breaker,omitempty"`
	BulkheadUsed int    `json:"bulkhead_in_flight"`
	BulkheadMax  int    `json:"bulkhead_max"`
	// BulkheadWaiting is how many requests are queued for a slot now.
	BulkheadWaiting int    `json:"bulkhead_waiting"`
	RateLimited     uint64 `json:"rate_limited"`
	RateKeys        int    `json:"rate_limit_keys"`
	// Cache is nil when the route has no cache.
	Cache *CacheStatus `json:"cache,omitempty"`
}

// UpstreamQueues is what waits at one upstream: for its concurrency slots
// and for its quota tokens.
type UpstreamQueues struct {
	Name string `json:"name"`
	// Concurrency is nil without a concurrency block.
	Concurrency *SlotsStatus `json:"concurrency,omitempty"`
	// QuotaWaiting is how many attempts are queued for a quota token
	// (0 without a quota).
	QuotaWaiting int `json:"quota_waiting"`
}

// SlotsStatus is a set of slots: taken, in all, and callers queued.
type SlotsStatus struct {
	InFlight int `json:"in_flight"`
	Max      int `json:"max"`
	Waiting  int `json:"waiting"`
}

// upstreamQueues reports the upstreams that have a concurrency block or a
// quota, in name order.
func upstreamQueues(l proxy.Live) []UpstreamQueues {
	var out []UpstreamQueues
	for _, u := range l.Upstreams {
		if u.Concurrency == nil && u.Quota == nil {
			continue
		}
		q := UpstreamQueues{Name: u.Name}
		if c := u.Concurrency; c != nil {
			q.Concurrency = &SlotsStatus{InFlight: c.InFlight(), Max: c.Max(), Waiting: c.Waiting()}
		}
		if u.Quota != nil {
			q.QuotaWaiting = u.Quota.Snapshot().Waiting
		}
		out = append(out, q)
	}
	return out
}

// CacheStatus is a route cache's occupancy. (cache.Stats has no JSON
// names of its own; these are the admin API's.)
type CacheStatus struct {
	Entries   int    `json:"entries"`
	Bytes     int64  `json:"bytes"`
	Evictions uint64 `json:"evictions"`
}

// routeStatuses reports every route's live state, in file order.
func routeStatuses(l proxy.Live) []RouteStatus {
	out := make([]RouteStatus, 0, len(l.Routes))
	for _, rt := range l.Routes {
		st := RouteStatus{Name: rt.Name, Upstream: rt.Upstream}
		if rt.Breaker != nil {
			st.Breaker = rt.Breaker.Name
		}
		if rt.Bulkhead != nil {
			st.BulkheadUsed, st.BulkheadMax, st.BulkheadWaiting = rt.Bulkhead.InFlight(), rt.Bulkhead.Max(), rt.Bulkhead.Waiting()
		}
		if rt.Limiter != nil {
			st.RateLimited, st.RateKeys = rt.Limiter.Rejected(), rt.Limiter.Keys()
		}
		if rt.Cache != nil {
			cs := rt.Cache.Stats()
			st.Cache = &CacheStatus{Entries: cs.Entries, Bytes: cs.Bytes, Evictions: cs.Evictions}
		}
		out = append(out, st)
	}
	return out
}

// purgeCache empties every route's cache, or one route's; it returns the
// routes purged, sorted.
func purgeCache(l proxy.Live, routeName string) []string {
	purged := []string{}
	for _, rt := range l.Routes {
		if rt.Cache != nil && (routeName == "" || rt.Name == routeName) {
			rt.Cache.Purge()
			purged = append(purged, rt.Name)
		}
	}
	slices.Sort(purged)
	return purged
}

// hasRoute reports whether the running config has a route of that name.
func hasRoute(l proxy.Live, name string) bool {
	return slices.ContainsFunc(l.Routes, func(rt proxy.LiveRoute) bool { return rt.Name == name })
}

// TierStatus is one client tier's live usage, for /routes and the dashboard.
type TierStatus struct {
	Name          string   `json:"name"`
	Priority      string   `json:"priority"`
	RateLimits    []string `json:"rate_limits"` // N/DURATION, config order
	MaxConcurrent int      `json:"max_concurrent"`
	// Clients is how many clients of the keys file are in the tier;
	// Tracked how many of them the tier's limiter holds buckets for.
	Clients  int `json:"clients"`
	Tracked  int `json:"rate_limit_keys"`
	InFlight int `json:"in_flight"`
	// Rejected counts the tier's rate-limit refusals; RejectedBy the same
	// by window, in rate_limits order.
	Rejected   uint64   `json:"rejected"`
	RejectedBy []uint64 `json:"rejected_by_window,omitempty"`
}

// tierStatuses reports every tier's usage, sorted by name.
func tierStatuses(l proxy.Live) []TierStatus {
	out := make([]TierStatus, 0, len(l.Tiers))
	for _, u := range l.Tiers {
		st := TierStatus{Name: u.Name, Priority: u.Priority, MaxConcurrent: u.MaxConcurrent, Clients: u.Clients,
			Tracked: u.Tracked, InFlight: u.InFlight, Rejected: u.Rejected, RejectedBy: u.RejectedBy, RateLimits: []string{}}
		for _, w := range u.Windows {
			st.RateLimits = append(st.RateLimits, w.Rate.String())
		}
		out = append(out, st)
	}
	return out
}

// storeHealth reports the shared store: while it falls back, the proxy
// still answers (the fallback decides), so the status is degraded, not
// unhealthy.
func storeHealth(l proxy.Live, rep *HealthReport) {
	if l.Store == nil {
		return
	}
	state, reason := l.Store.State()
	rep.Store, rep.StoreError = state, reason
	if state != "ok" && rep.Status == "healthy" {
		rep.Status = "degraded"
	}
}
