package proxy

import (
	"sort"

	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// What the admin listener reads and changes. The proxy owns the state; the
// admin package only presents it.

// Breakers reports every breaker of the running config.
func (s *Server) Breakers() []policy.BreakerStatus {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	out := make([]policy.BreakerStatus, 0, len(t.breakers))
	for _, b := range t.breakers {
		out = append(out, b.Status())
	}
	return out
}

// ForceBreaker sets a breaker's state by name; false when there is no such
// breaker or state.
func (s *Server) ForceBreaker(name string, state policy.State) (found, ok bool) {
	t := s.table.Load()
	if t == nil {
		return false, false
	}
	for _, b := range t.breakers {
		if b.Name == name {
			return true, b.Force(state)
		}
	}
	return false, false
}

// UpstreamHealth is one upstream's health from its breakers' states.
type UpstreamHealth struct {
	Name     string            `json:"name"`
	Status   string            `json:"status"` // healthy, degraded, unhealthy
	Breakers map[string]string `json:"breakers"`
	Quota    *QuotaStatus      `json:"quota,omitempty"`
}

// QuotaStatus is an upstream quota's state.
type QuotaStatus struct {
	Tokens    float64 `json:"tokens"`
	Burst     int     `json:"burst"`
	Rate      string  `json:"rate"`
	PausedFor float64 `json:"paused_for_seconds"`
	Exhausted uint64  `json:"exhausted"`
}

// Health reports each upstream: healthy when every breaker in front of it
// is closed, degraded when one is open or half-open, unhealthy when all are
// open.
func (s *Server) Health() []UpstreamHealth {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	byUp := map[string]map[string]string{}
	open := map[string]int{}
	for _, rt := range t.routes {
		if rt.breaker == nil {
			continue
		}
		m := byUp[rt.up.name]
		if m == nil {
			m = map[string]string{}
			byUp[rt.up.name] = m
		}
		st := rt.breaker.State()
		if _, seen := m[rt.breaker.Name]; !seen {
			m[rt.breaker.Name] = string(st)
			if st != policy.Closed {
				open[rt.up.name]++
			}
		}
	}
	var out []UpstreamHealth
	for _, name := range t.upstreamNames() {
		h := UpstreamHealth{Name: name, Status: "healthy", Breakers: byUp[name]}
		if n := open[name]; n > 0 {
			h.Status = "degraded"
			if n == len(byUp[name]) && allOpen(byUp[name]) {
				h.Status = "unhealthy"
			}
		}
		if q := t.upstreams[name].quota; q != nil {
			h.Quota = quotaStatus(q.Snapshot())
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
	return &QuotaStatus{Tokens: s.Tokens, Burst: s.Burst, Rate: s.Rate, PausedFor: s.PausedFor.Seconds(), Exhausted: s.Exhausted}
}

// RouteStatus is one route's live policy state, for the dashboard.
type RouteStatus struct {
	Name         string       `json:"name"`
	Upstream     string       `json:"upstream"`
	Breaker      string       `json:"breaker,omitempty"`
	BulkheadUsed int          `json:"bulkhead_in_flight"`
	BulkheadMax  int          `json:"bulkhead_max"`
	RateLimited  uint64       `json:"rate_limited"`
	RateKeys     int          `json:"rate_limit_keys"`
	Cache        *CacheStatus `json:"cache,omitempty"`
}

// CacheStatus is a route cache's occupancy. (cache.Stats has no JSON
// names of its own; these are the admin API's.)
type CacheStatus struct {
	Entries   int    `json:"entries"`
	Bytes     int64  `json:"bytes"`
	Evictions uint64 `json:"evictions"`
}

// Routes reports every route's live state.
func (s *Server) Routes() []RouteStatus {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	out := make([]RouteStatus, 0, len(t.routes))
	for _, rt := range t.routes {
		st := RouteStatus{Name: rt.name, Upstream: rt.up.name}
		if rt.breaker != nil {
			st.Breaker = rt.breaker.Name
		}
		if rt.bulkhead != nil {
			st.BulkheadUsed, st.BulkheadMax = rt.bulkhead.InFlight(), rt.bulkhead.Max()
		}
		if rt.limiter != nil {
			st.RateLimited, st.RateKeys = rt.limiter.Rejected(), rt.limiter.Keys()
		}
		if rt.cache != nil {
			cs := rt.cache.store.Stats()
			st.Cache = &CacheStatus{Entries: cs.Entries, Bytes: cs.Bytes, Evictions: cs.Evictions}
		}
		out = append(out, st)
	}
	return out
}

// PurgeCache empties every route's cache, or one route's; it returns the
// routes purged.
func (s *Server) PurgeCache(routeName string) []string {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	var purged []string
	for _, rt := range t.routes {
		if rt.cache != nil && (routeName == "" || rt.name == routeName) {
			rt.cache.store.Purge()
			purged = append(purged, rt.name)
		}
	}
	sort.Strings(purged)
	return purged
}

// HasRoute reports whether the running config has a route of that name.
func (s *Server) HasRoute(name string) bool {
	t := s.table.Load()
	if t == nil {
		return false
	}
	for _, rt := range t.routes {
		if rt.name == name {
			return true
		}
	}
	return false
}
