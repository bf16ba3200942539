package proxy

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/breakwater-proxy/breakwater/clients"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/clock"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// ClientObserver is the part of Observer that counts requests by tier
// (observe.Metrics implements it). The tier label is bounded: the config's
// tier names, "anonymous" (no key, on a client_auth: optional route) and
// "none" (refused as unauthorized).
type ClientObserver interface {
	// TierRequest reports the identity step's outcome for one request of
	// a route with client_auth: result is admitted, unauthorized,
	// rate_limited or max_concurrent.
	TierRequest(route, tier, result string)
}

// tierState is one tier's live pieces. They are shared by every route
// whose rate_limit has key: client, and carried across reloads while the
// tier's settings are unchanged.
type tierState struct {
	name    string
	cfg     *config.Tier
	windows []config.Window
	// limiter holds the tier's buckets in this process; shared, on the
	// store, is what routes with `rate_limit: { key: client, shared: true }`
	// spend from (SPEC Part 3 "Client keys"). Both are nil when the tier
	// has no rate_limits; shared is nil without a store.
	limiter RateLimiter
	shared  RateLimiter
	conc    *clients.Concurrency
	// priority is cfg.Priority, parsed once.
	priority policy.Priority
}

// clientTable is a config's client identity: the keys file read when the
// table was built, the header that carries keys, and the tiers.
type clientTable struct {
	keys    *clients.Keys
	header  string
	tiers   map[string]*tierState
	perTier map[string]int // clients in the keys file, by tier
}

// buildClients reads the keys file and makes the tiers. A keys file with
// problems fails the build (a reload keeps the old table, keys included);
// its problems carry FILE:LINE like the config's.
func buildClients(cfg *config.Config, reg *lifecycle.Registry, sc *store.Client) (*clientTable, error) {
	ct := &clientTable{header: http.CanonicalHeaderKey(cfg.Clients.Header), tiers: map[string]*tierState{}}
	for _, name := range slices.Sorted(maps.Keys(cfg.Tiers)) {
		tc := cfg.Tiers[name]
		ct.tiers[name] = lifecycle.Get(reg, "tier", name, tc, func() *tierState {
			ts := &tierState{name: name, cfg: tc, windows: config.WindowsOf(tc.RateLimits), conc: clients.NewConcurrency(),
				priority: policy.ParsePriority(tc.Priority)}
			if len(ts.windows) > 0 {
				// One bucket set per client id; ids come from the keys
				// file, so the limiter holds at most that many keys.
				ts.limiter = ratelimit.NewLimiter(ts.windows)
			}
			return ts
		})
		if ts := ct.tiers[name]; sc != nil && len(ts.windows) > 0 {
			ts.shared = sharedTierLimiter(reg, sc, storeKey(cfg.Store), name, tc)
		}
	}
	if f := cfg.Clients.KeysFile; f != "" {
		keys, err := clients.Load(f, func(tier string) bool { return ct.tiers[tier] != nil })
		if err != nil {
			var ps config.Problems
			if errors.As(err, &ps) {
				return nil, ps
			}
			return nil, err
		}
		ct.keys = keys
	}
	ct.perTier = map[string]int{}
	for _, c := range ct.keys.List() {
		ct.perTier[c.Tier]++
	}
	return ct, nil
}

// identify runs a route's identity step: it finds the caller by key,
// removes the key from the request (it is never forwarded), and refuses a
// request that presents no valid key where one is required, or an unknown
// or disabled one anywhere (a caller who thinks it is identified should
// learn that it is not). false means the request was answered.
func (s *Server) identify(r *http.Request, rq *request) bool {
	ct, rt := rq.table.clients, rq.route
	key := clients.FromRequest(r.Header, ct.header)
	r.Header.Del(ct.header)
	c := ct.keys.Lookup(key)
	if c != nil && c.Disabled {
		c = nil
	}
	if c == nil && (key != "" || rt.clientAuth == authRequired) {
		s.observeTier(rt.name, "none", "unauthorized")
		rq.lw.Header().Set("WWW-Authenticate", `Bearer realm="breakwater"`)
		s.rejectUnread(r, rq, KindUnauthorized, rt.detectMax, 0)
		return false
	}
	if c == nil {
		rq.tierName = "anonymous"
		return true
	}
	rq.caller, rq.tier, rq.tierName = c, ct.tiers[c.Tier], c.Tier
	return true
}

// dropKnownKey is the identity step of a client_auth: none route: it
// identifies no one, but a known key sent to it is removed all the same.
func (s *Server) dropKnownKey(r *http.Request, rq *request) bool {
	ct := rq.table.clients
	ct.keys.RemoveKnown(r.Header, ct.header)
	return true
}

// limitClient applies the caller's tier on a route whose rate_limit has
// key: client: the tier's windows, per client id. Anonymous callers of an
// optional route get the route's own windows, by client IP. false means
// the request was answered.
func (s *Server) limitClient(r *http.Request, rq *request) bool {
	ts, rt := rq.tier, rq.route
	if ts == nil {
		if rt.limiter == nil {
			return true
		}
		return s.limitRoute(r, rq)
	}
	limiter := ts.limiter
	if rt.sharedTier && ts.shared != nil {
		limiter = ts.shared
	}
	if limiter == nil {
		return true
	}
	if !s.take(r, rq, limiter, ts.name, ts.windows, rq.caller.ID) {
		s.observeTier(rt.name, ts.name, "rate_limited")
		return false
	}
	return true
}

// limitRoute applies the route's own rate limit, by the route's key.
func (s *Server) limitRoute(r *http.Request, rq *request) bool {
	rt := rq.route
	return s.take(r, rq, rt.limiter, rt.name, rt.windows, rt.limitKey(r))
}

// take spends from limiter for key, writes the RateLimit headers under
// name and refuses (429) or waits as the Decision says. false means the
// request was answered.
//
// A JSON-RPC batch takes one token per element (rq.weight); a batch
// refused part way keeps what it spent.
func (s *Server) take(r *http.Request, rq *request, limiter RateLimiter, name string, ws []config.Window, key string) bool {
	rt := rq.route
	for range rq.weight() {
		d := limiter.Take(key, rt.maxWait)
		ratelimit.SetWindowsHeaders(rq.lw.Header(), name, ws, d)
		if !d.Allowed {
			s.metrics.RouteRateLimited(rt.name)
			s.rejectUnread(r, rq, KindRateLimited, rt.detectMax, d.RetryAfter)
			return false
		}
		if !clock.Sleep(r.Context(), clock.Real, d.Wait) {
			s.reject(rq, kindClientClosed, 0)
			return false
		}
	}
	return true
}

// concurrencyRetry is the Retry-After of a client over its tier's
// max_concurrent: its own requests in flight end soon or not at all.
const concurrencyRetry = time.Second

// holdSlot takes one of the caller's max_concurrent slots, given back by
// request.release, and counts the caller admitted. false means the
// request was answered (429).
func (s *Server) holdSlot(r *http.Request, rq *request) bool {
	ts, rt := rq.tier, rq.route
	if ts != nil && ts.cfg.MaxConcurrent > 0 {
		if !ts.conc.Acquire(rq.caller.ID, ts.cfg.MaxConcurrent) {
			s.observeTier(rt.name, ts.name, "max_concurrent")
			s.rejectUnread(r, rq, KindRateLimited, rt.detectMax, concurrencyRetry)
			return false
		}
		rq.tierSlot = true
	}
	s.observeTier(rt.name, rq.tierName, "admitted")
	return true
}

func (s *Server) observeTier(route, tier, result string) {
	s.metrics.TierRequest(route, tier, result)
}

// TierUsage is one tier's live usage, for /routes and the dashboard.
type TierUsage struct {
	Name          string
	Priority      string
	MaxConcurrent int
	Windows       []config.Window
	// Clients is how many clients of the keys file are in this tier.
	Clients int
	// Tracked is how many clients the tier's limiter holds buckets for.
	Tracked int
	// InFlight is the tier's clients' requests in flight.
	InFlight int
	// Rejected counts refusals by the tier's rate limit, and RejectedBy
	// the same by window (config order).
	Rejected   uint64
	RejectedBy []uint64
}

// tierUsage is every tier's usage, sorted by name.
func (t *table) tierUsage() []TierUsage {
	perTier := t.clients.perTier
	var out []TierUsage
	for _, name := range slices.Sorted(maps.Keys(t.clients.tiers)) {
		ts := t.clients.tiers[name]
		u := TierUsage{Name: name, Priority: ts.cfg.Priority, MaxConcurrent: ts.cfg.MaxConcurrent, Windows: ts.windows,
			Clients: perTier[name], InFlight: ts.conc.InFlight()}
		for _, l := range []RateLimiter{ts.limiter, ts.shared} {
			if l == nil {
				continue
			}
			u.Tracked, u.Rejected = u.Tracked+l.Keys(), u.Rejected+l.Rejected()
			u.RejectedBy = slices.Grow(u.RejectedBy, len(ts.windows))[:len(ts.windows)]
			for i := range ts.windows {
				u.RejectedBy[i] += l.RejectedBy(i)
			}
		}
		out = append(out, u)
	}
	return out
}
