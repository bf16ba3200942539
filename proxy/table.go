package proxy

import (
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/mcp"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
	"github.com/breakwater-proxy/breakwater/transport"
)

// table is one config's routing: immutable once built, swapped atomically
// on reload. Requests in flight keep the table they started with.
type table struct {
	cfg       *config.Config
	routes    []*route
	upstreams map[string]*upstream
	breakers  []*policy.Breaker // sorted by scope, then name
	trusted   trustedNets
	maxBody   int64         // server.max_body
	maxHeader int64         // server.max_header_bytes
	bodyIdle  time.Duration // server.body_idle_timeout
	detectMax int64         // JSON-RPC detection limit of a request no route takes
	batches   bool          // mcp.batches: allow
	clients   *clientTable  // keys file, key header and tiers; never nil once built
	store     *store.Client // nil without a store block (store.go)
	accessLog bool          // log.access_log
}

// upstream is one config upstream, ready to send to.
type upstream struct {
	name           string
	target         *url.URL
	hostFromClient bool
	set            [][2]string // header name, value (secrets revealed here only)
	remove         []string
	transport      *transport.Base
	quota          UpstreamQuota    // nil without a quota
	concurrency    *policy.Bulkhead // one set of slots for every route to it; nil = none
	token          *auth.Source     // nil: no auth.oauth2
	tools          *mcp.Tools       // its latest tools/list; nil: no route to it reads the call
	mode           *health.Mode     // never nil; carried across reloads by name
	check          *health.Checker  // nil: no health_check
}

// route is one config route with its policies built.
type route struct {
	name     string
	match    matcher
	up       *upstream
	strip    string
	proxy    *httputil.ReverseProxy
	pipeline *policy.Pipeline
	breaker  *policy.Breaker
	bulkhead *policy.Bulkhead
	// steps are the route's admission, in order, chosen at build time
	// from its config (admission.go): what the route does not use is not
	// in the list, so no request asks.
	steps []step
	// limiter is the route's own rate limit (nil: none), windows its
	// windows, limitKey the key it counts by (for key: client, an
	// anonymous caller's IP); maxWait is rate_limit.max_wait and
	// sharedTier says a key: client limit spends from the tier's buckets
	// on the store.
	limiter    RateLimiter
	windows    []config.Window
	limitKey   func(*http.Request) string
	maxWait    time.Duration
	sharedTier bool
	// clientAuth is how the route identifies its callers; forwardID the
	// header that carries the client's id upstream ("" = none).
	clientAuth clientAuth
	forwardID  string
	// priority is the route's place in the queues; a caller's tier may raise it.
	priority policy.Priority
	cache    *routeCache
	fallback *config.Fallback
	errors   errorMode
	timeout  time.Duration
	idle     time.Duration // stream_idle_timeout, both directions
	// detectMax is how much of a JSON POST is read to tell a JSON-RPC
	// request (retry.max_body, or 1 MiB without retry).
	detectMax int64
	// authReplay is how much of any body is kept for the resend after an
	// upstream 401 (see replayLimit); 0 without auth.oauth2.
	authReplay int64
	// hints, set under retry.tools: annotated, decide tools/call retries.
	hints *mcp.Tools
	// tools, set on a route that reads the call (match on jsonrpc_method
	// or tool, or retry.tools: annotated), learns from tools/list answers.
	tools *mcp.Tools
}

// RateLimiter is a route's ingress rate limit as the request path and the
// admin API use it: local token buckets (ratelimit.Limiter), or a store
// shared by replicas.
//
// A limiter is made for the windows of one config.RateLimit (Windows(): a
// single `rate` with its burst, or every window of `rates`) or of one
// tier's rate_limits (config.WindowsOf). It admits a request only when
// every window has a token, and spends from none when it refuses. Its
// Decision describes the deciding window in its top-level fields, with
// Decision.Window its index in that windows list (the refusing window, or
// for an allowed request the tightest one); a limiter of several windows
// also fills Decision.Windows, one WindowState per window in the same
// order, from which the RateLimit headers are written
// (ratelimit.SetWindowsHeaders). A limiter of one window may leave
// Windows nil and Window 0. A store-backed limiter does the same with one
// atomic script that checks every window before spending from any.
type RateLimiter interface {
	// Take spends a token of every window for key, waiting at most maxWait.
	Take(key string, maxWait time.Duration) ratelimit.Decision
	// Rejected counts the requests refused so far.
	Rejected() uint64
	// RejectedBy counts the refusals that window i (config order) decided.
	RejectedBy(i int) uint64
	// Keys is how many keys are tracked.
	Keys() int
}

// build makes a table from a validated config, taking stateful policies
// from reg so that unchanged ones keep their state across a reload.
func (s *Server) build(cfg *config.Config, reg *lifecycle.Registry) (*table, error) {
	t := &table{
		cfg: cfg, upstreams: map[string]*upstream{},
		trusted: parseTrusted(cfg.Server.TrustedProxies), maxBody: int64(cfg.Server.MaxBody),
		maxHeader: int64(cfg.Server.MaxHeaderBytes), bodyIdle: cfg.Server.BodyIdleTimeout.D(),
		detectMax: min(int64(cfg.Server.MaxBody), int64(config.DefaultDetectBody)),
		batches:   cfg.MCP.Batches == "allow", accessLog: cfg.Log.AccessLog,
	}
	sc, err := s.buildStore(cfg, reg)
	if err != nil {
		return nil, err
	}
	t.store = sc
	if t.clients, err = buildClients(cfg, reg, sc); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		if t.upstreams[name], err = s.buildUpstream(t, name, cfg.Upstreams[name], reg); err != nil {
			return nil, err
		}
	}
	seenBreaker := map[*policy.Breaker]bool{}
	for _, rc := range cfg.Routes {
		rt := s.buildRoute(t, rc, reg)
		if rt.breaker != nil && !seenBreaker[rt.breaker] {
			seenBreaker[rt.breaker] = true
			t.breakers = append(t.breakers, rt.breaker)
		}
		t.routes = append(t.routes, rt)
	}
	sort.Slice(t.breakers, func(i, j int) bool {
		a, b := t.breakers[i], t.breakers[j]
		if a.Scope != b.Scope {
			return a.Scope > b.Scope // upstream before route
		}
		return a.Name < b.Name
	})
	return t, nil
}

// storeKey is what t's shared pieces are keyed on in the registry ("":
// no store).
func (t *table) storeKey() string {
	if t.store == nil {
		return ""
	}
	return storeKey(t.cfg.Store)
}

// buildUpstream makes upstream name ready to send to.
func (s *Server) buildUpstream(t *table, name string, u *config.Upstream, reg *lifecycle.Registry) (*upstream, error) {
	target, err := url.Parse(u.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	tc := transport.ConfigOf(u, target.Scheme)
	tr, err := lifecycle.TryGet(reg, "transport", name, tc, func() (*transport.Base, error) { return transport.NewBase(tc) })
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	up := &upstream{name: name, target: target, hostFromClient: u.HostHeader == "client", transport: tr, remove: u.Headers.Remove}
	for k, v := range u.Headers.Set {
		up.set = append(up.set, [2]string{http.CanonicalHeaderKey(k), v.Reveal()})
	}
	if u.Quota != nil {
		q := *u.Quota
		obs := quotaQueue{obs: s.metrics, upstream: name}
		if q.Shared && t.store != nil {
			up.quota = sharedQuota(reg, t.store, t.storeKey(), name, q, obs)
		} else {
			up.quota = lifecycle.Get(reg, "quota", name, q, func() *ratelimit.Quota {
				return ratelimit.NewQuota(q, ratelimit.NewBucket(q), obs)
			})
		}
	}
	if c := u.Concurrency; c != nil {
		up.concurrency = lifecycle.Get(reg, "concurrency", name, c, func() *policy.Bulkhead { return policy.NewBulkhead(name, c, s.metrics) })
	}
	up.token = s.tokenSource(reg, name, u)
	up.mode = lifecycle.Get(reg, "upstream_mode", name, nil, func() *health.Mode { return health.NewMode(name, s.metrics) })
	if hc := u.HealthCheck; hc != nil {
		cs := health.Settings{Check: *hc, URL: u.URL, Transport: tc}
		up.check = lifecycle.Get(reg, "health_check", name, cs, func() *health.Checker { return health.NewChecker(name, cs, tr, s.metrics) })
	}
	return up, nil
}

// buildRoute makes one route: its policies, its admission steps and the
// ReverseProxy that sends what they admit.
func (s *Server) buildRoute(t *table, rc *config.Route, reg *lifecycle.Registry) *route {
	e := rc.Effective
	up := t.upstreams[rc.Upstream]
	rt := &route{
		name: rc.Name, match: newMatcher(rc.Match), up: up, strip: rc.StripPrefix,
		fallback: e.Fallback, errors: errorModeOf(e.Errors), timeout: e.Timeout.D(),
		idle: e.StreamIdleTimeout.D(), detectMax: int64(e.DetectBody),
		clientAuth: clientAuthOf(e.ClientAuth), forwardID: http.CanonicalHeaderKey(e.ForwardClientID),
		priority: policy.ParsePriority(e.Priority),
	}
	rt.breaker = s.routeBreaker(rc, reg)
	if b := e.Bulkhead; b != nil {
		rt.bulkhead = lifecycle.Get(reg, "bulkhead", rc.Name, b, func() *policy.Bulkhead { return policy.NewBulkhead(rc.Name, b, s.metrics) })
	}
	if l := e.RateLimit; l != nil {
		rt.limitWith(t, l, reg)
	}
	if c := e.Cache; c != nil {
		rt.cache = newRouteCache(t, rt, c, reg)
	}
	if up.token != nil {
		// retry.max_body, or its default without retry: DetectBody
		// is exactly that.
		rt.authReplay = int64(e.DetectBody)
	}
	if annotated := e.Retry != nil && e.Retry.Tools == "annotated"; annotated || rt.match.needsCall() {
		if up.tools == nil {
			// Carried across reloads while the upstream's URL stays: a
			// reload must not forget the list until the next tools/list.
			up.tools = lifecycle.Get(reg, "tool_hints", up.name, up.target.String(), func() *mcp.Tools { return &mcp.Tools{} })
		}
		rt.tools = up.tools
		if annotated {
			rt.hints = up.tools
		}
	}
	parts := policy.Parts{Breaker: rt.breaker, Bulkhead: rt.bulkhead, Concurrency: up.concurrency}
	if up.quota != nil {
		parts.Quota = up.quota
	}
	rt.pipeline = policy.NewPipeline(rc, up.transport, parts, s.metrics, requestTrace)
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { rt.rewrite(pr, t.trusted) },
		Transport:      withAuth(up.token, rt.pipeline),
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.errorHandler,
		BufferPool:     s.buffers,
		ErrorLog:       log.New(io.Discard, "", 0), // every error is logged once, in the access log
	}
	rt.steps = admission(t, rt, e.RateLimit)
	return rt
}

// routeBreaker is rc's circuit breaker: the upstream's, shared by every
// route to it, or the route's own; nil without one.
func (s *Server) routeBreaker(rc *config.Route, reg *lifecycle.Registry) *policy.Breaker {
	e := rc.Effective
	cb := e.CircuitBreaker
	switch {
	case cb == nil:
		return nil
	case e.SharedBreaker:
		return lifecycle.Get(reg, "breaker/upstream", rc.Upstream, cb, func() *policy.Breaker {
			return policy.NewBreaker(rc.Upstream, "upstream", cb, s.metrics)
		})
	}
	return lifecycle.Get(reg, "breaker/route", rc.Name, cb, func() *policy.Breaker {
		return policy.NewBreaker(rc.Name, "route", cb, s.metrics)
	})
}

// limitWith gives rt its rate limit l: the limiter of its windows (on the
// store when shared and there is one), the key it counts by, and the
// settings its admission step reads.
func (rt *route) limitWith(t *table, l *config.RateLimit, reg *lifecycle.Registry) {
	rt.windows = l.Windows()
	if len(rt.windows) > 0 && l.Shared && t.store != nil {
		rt.limiter = sharedLimiter(reg, t.store, t.storeKey(), rt.name, l)
	} else if len(rt.windows) > 0 {
		rt.limiter = lifecycle.Get(reg, "ratelimit", rt.name, l, func() *ratelimit.Limiter { return ratelimit.NewLimiter(rt.windows) })
	}
	rt.limitKey, rt.maxWait, rt.sharedTier = limitKey(l.Key, t.trusted), l.MaxWait.D(), l.Shared
}

// newRouteCache is rt's cache c: its store (on the store server when
// shared and there is one), policy and coalescing group.
func newRouteCache(t *table, rt *route, c *config.Cache, reg *lifecycle.Registry) *routeCache {
	var store cache.Store
	if c.Shared && t.store != nil {
		store = sharedCache(reg, t.store, t.storeKey(), rt.name, c)
	} else {
		store = lifecycle.Get(reg, "cache", rt.name, c, func() cache.Store { return cache.NewMemory(int64(c.MaxSize)) })
	}
	return &routeCache{
		policy: cache.Policy{TTL: c.TTL.D(), StaleIfError: c.StaleIfError.D(), MaxEntrySize: int64(c.MaxEntrySize), Vary: c.Vary,
			HostFromClient: rt.up.hostFromClient, ShareClients: !c.PerClient},
		store: store, group: cache.NewGroup(maxCoalesceWaiters),
	}
}

// limitKey resolves a rate limit's key (none | client_ip | header:NAME |
// client) into the function that reads it from a request. Under key:
// client that is the caller's IP: an anonymous caller of an optional
// route counts by it (an identified one counts by its id, limitClient).
func limitKey(key string, trusted trustedNets) func(*http.Request) string {
	switch {
	case key == "client_ip", key == "client":
		return trusted.clientIP
	case strings.HasPrefix(key, "header:"):
		name := http.CanonicalHeaderKey(strings.TrimPrefix(key, "header:"))
		return func(r *http.Request) string {
			if v := r.Header[name]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
	}
	return func(*http.Request) string { return "" }
}

// match finds the first route for r, in file order. A route that matches
// on the JSON-RPC call has the body read for it (readCall), once, and only
// when its other conditions hold. The body alone decides: Mcp-* headers
// never do. The error is the body's own failure during that read, a body
// refused (errRefusedRPC: also one it cannot read, readRouteCall), or a
// body too large to tell which call it makes where a route depends on it:
// padding a call past the read limit, or sending it in a form breakwater
// does not read, must not slip it past the route meant for it.
func (t *table) match(r *http.Request, rq *request, urlPath string) (*route, error) {
	for _, rt := range t.routes {
		if !rt.match.match(r, urlPath) {
			continue
		}
		if rt.match.needsCall() {
			if err := rq.readRouteCall(r, t.detectMax, t.batches); err != nil {
				return nil, err
			}
			if !rq.callRead && r.Body != nil && r.Body != http.NoBody {
				rq.detail = fmt.Sprintf("The body is over %d bytes: too large for breakwater to read which JSON-RPC method or tool it calls, which decides its route.", t.detectMax)
				return nil, errBodyTooLarge
			}
			if !rt.match.matchCall(rq.jsonrpc) {
				continue
			}
		}
		return rt, nil
	}
	return nil, nil
}

// rewrite builds the upstream request: ReverseProxy has already removed
// hop-by-hop headers (also those the client named in Connection) and the
// client's X-Forwarded-* headers.
func (rt *route) rewrite(pr *httputil.ProxyRequest, trusted trustedNets) {
	in, out := pr.In, pr.Out
	trustedPeer := trusted.contains(in.RemoteAddr)
	if trustedPeer {
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := in.Header[h]; len(v) > 0 && !namedInConnection(in.Header, h) {
				out.Header[h] = v
			}
		}
	}
	host, proto := out.Header["X-Forwarded-Host"], out.Header["X-Forwarded-Proto"]
	pr.SetXForwarded()
	if trustedPeer {
		if len(host) > 0 {
			out.Header["X-Forwarded-Host"] = host
		}
		if len(proto) > 0 {
			out.Header["X-Forwarded-Proto"] = proto
		}
	}
	if rt.strip != "" {
		// Strip the escaped form too, so that an escaped slash (a%2Fb)
		// reaches the upstream escaped; url.URL drops a RawPath that no
		// longer encodes Path.
		raw := out.URL.RawPath
		if raw != "" {
			raw = stripPrefix(raw, rt.strip)
		}
		out.URL.Path, out.URL.RawPath = stripPrefix(out.URL.Path, rt.strip), raw
	}
	pr.SetURL(rt.up.target)
	if rt.up.hostFromClient {
		out.Host = in.Host
	}
	for _, h := range rt.up.remove {
		out.Header.Del(h)
	}
	for _, kv := range rt.up.set {
		out.Header[kv[0]] = []string{kv[1]}
	}
	rq := requestFrom(in.Context())
	if rq != nil {
		out.Header["X-Request-Id"] = rq.idHeader()
	}
	if rt.forwardID != "" {
		// Whatever the client sent in this header is dropped: only
		// breakwater says who the client is.
		dropSpellings(out.Header, rt.forwardID)
		if rq != nil && rq.caller != nil {
			out.Header[rt.forwardID] = []string{rq.caller.ID}
		}
	}
}

// dropSpellings removes the header name (canonical) in every spelling
// that an upstream may read as it: CGI and WSGI servers (gunicorn before
// 22, PHP) read X_Client_Id as X-Client-Id, both HTTP_X_CLIENT_ID.
func dropSpellings(h http.Header, name string) {
	for k := range h {
		if len(k) == len(name) && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), name) {
			delete(h, k)
		}
	}
}

// upstreamNames lists the upstreams, for /health.
func (t *table) upstreamNames() []string {
	return slices.Sorted(maps.Keys(t.upstreams))
}

func isJSON(contentType string) bool {
	ct := strings.ToLower(contentType)
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	return ct == "application/json" || strings.HasSuffix(ct, "+json")
}
