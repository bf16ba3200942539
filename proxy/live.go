package proxy

import (
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/store"
)

// Observer is everything the data plane reports to, passed once to New:
// the policies' observations, each request's own, the client tiers', the
// upstream tokens', health checks' and the shared store's. observe.Fanout
// implements it with metrics and the /events hub. It is one interface, not
// a small one plus others found by type assertion, so that an observer
// missing a method fails to compile rather than going unheard.
type Observer interface {
	policy.Observer
	ClientObserver
	TokenObserver
	health.Observer
	store.Observer
	// Request reports a finished request (route "" when none matched; tool
	// "" when it called no MCP tool, else a bounded label: a name the
	// config or the first mcp.max_tools calls gave, or "other").
	Request(route, method string, code int, outcome, tool string, d time.Duration)
	// CacheLookup reports a cache lookup: result is hit, miss or stale.
	CacheLookup(route, result string)
	// RouteRateLimited reports a request refused by the route's rate_limit.
	RouteRateLimited(route string)
	// FollowBreakers hands over the running config's breakers, read at
	// scrape time (nil before the first Load).
	FollowBreakers(list func() []*policy.Breaker)
}

// Live is a read-only view of the running config's stateful pieces, for
// the admin API, which presents them (admin/state.go). The zero Live
// (nothing loaded yet) has no config, routes, upstreams or breakers. The
// handles are live: reading them reads the current state, and Force or
// Purge on them acts on the running proxy.
type Live struct {
	Config *config.Config
	// Routes are in file order.
	Routes []LiveRoute
	// Upstreams are sorted by name.
	Upstreams []LiveUpstream
	// Breakers are each breaker once: upstream scope first, then route
	// scope, each sorted by name.
	Breakers []*policy.Breaker
	// Tiers are the client tiers' usage, sorted by name (none without tiers).
	Tiers []TierUsage
	// Store is the shared store's client, whose State says "ok", or
	// "fallback" with the error that caused it; nil without a store block.
	Store *store.Client
}

// LiveRoute is one route's handles; a nil handle means the route has no
// such policy.
type LiveRoute struct {
	Name     string
	Upstream string
	Breaker  *policy.Breaker
	Bulkhead *policy.Bulkhead
	Limiter  RateLimiter
	Cache    cache.Store
}

// LiveUpstream is one upstream's handles; Quota is nil without a quota.
type LiveUpstream struct {
	Name  string
	Quota UpstreamQuota
	// Concurrency is the upstream's one set of slots for all its routes;
	// nil without a concurrency block.
	Concurrency *policy.Bulkhead
	// Token is the upstream's OAuth2 token source; nil without auth.oauth2.
	Token *auth.Source
	// Mode is the upstream's operating mode (never nil).
	Mode *health.Mode
	// Check is the upstream's health checker; nil without health_check.
	Check *health.Checker
}

// Live reads the running table.
func (s *Server) Live() Live {
	t := s.table.Load()
	if t == nil {
		return Live{}
	}
	l := Live{Config: t.cfg, Routes: make([]LiveRoute, 0, len(t.routes)), Breakers: t.breakers, Tiers: t.tierUsage(), Store: t.store}
	for _, rt := range t.routes {
		lr := LiveRoute{Name: rt.name, Upstream: rt.up.name, Breaker: rt.breaker, Bulkhead: rt.bulkhead, Limiter: rt.limiter}
		if rt.cache != nil {
			lr.Cache = rt.cache.store
		}
		l.Routes = append(l.Routes, lr)
	}
	for _, name := range t.upstreamNames() {
		up := t.upstreams[name]
		l.Upstreams = append(l.Upstreams, LiveUpstream{Name: name, Quota: up.quota, Concurrency: up.concurrency, Token: up.token, Mode: up.mode, Check: up.check})
	}
	return l
}

// breakers is the running table's breakers, for the metrics' scrape-time
// state gauge.
func (s *Server) breakers() []*policy.Breaker {
	if t := s.table.Load(); t != nil {
		return t.breakers
	}
	return nil
}
