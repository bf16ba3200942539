package observe

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/breakwater-proxy/breakwater/policy"
)

// Metrics are breakwater's Prometheus metrics (SPEC.md, Metrics), on a
// registry of their own. Every label value is bounded: route, upstream and
// breaker names come from the config, codes are status codes, results are
// status classes or error kinds. Never a path, a client IP or a header.
type Metrics struct {
	Registry *prometheus.Registry

	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	attempts        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	budgetExhausted *prometheus.CounterVec
	breakerState    *breakerCollector
	breakerTrans    *prometheus.CounterVec
	bulkheadInFl    *prometheus.GaugeVec
	bulkheadRej     *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
	quotaWait       *prometheus.HistogramVec
	hedges          *prometheus.CounterVec
	cacheLookups    *prometheus.CounterVec
	reloads         *prometheus.CounterVec
	lastReload      prometheus.Gauge
	tierRequests    *prometheus.CounterVec // tiers.go
	tokens          *tokenMetrics          // upstream credentials (tokens.go)
	store           storeMetrics           // store.go
	queues          *queueMetrics          // queue waiting and wait times (queues.go)

	routes   seriesCache[string, *routeSeries]        // per-request children, by route
	quotaObs seriesCache[string, prometheus.Observer] // quota wait, by upstream
}

// NewMetrics registers every metric on a new registry, with the Go and
// process collectors and breakwater_build_info.
func NewMetrics(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_requests_total",
		Help: "Requests handled, by route, method, status code, outcome (upstream, cache_hit, stale, fallback, rejected) and MCP tool (\"\" for none)."},
		[]string{"route", "method", "code", "outcome", "tool"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "breakwater_request_duration_seconds",
		Help:    "Time from receiving a request to the end of its response, by route and MCP tool (\"\" for none).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
		[]string{"route", "tool"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_upstream_attempts_total",
		Help: "Attempts sent upstream (first tries, retries, hedges, probes), by result: a status class or an error kind."},
		[]string{"route", "upstream", "result"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_retries_total",
		Help: "Retries scheduled, by route and the reason (status code or error kind)."}, []string{"route", "reason"})
	m.budgetExhausted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_retry_budget_exhausted_total",
		Help: "Retries or hedges refused because the route's retry budget was spent."}, []string{"route"})
	m.breakerState = &breakerCollector{desc: prometheus.NewDesc("breakwater_circuit_breaker_state",
		"1 for the breaker's current state (closed, open, half-open), 0 for the others.", []string{"breaker", "state"}, nil)}
	m.breakerTrans = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_circuit_breaker_transitions_total",
		Help: "Circuit breaker state transitions."}, []string{"breaker", "from", "to"})
	m.bulkheadInFl = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_bulkhead_in_flight",
		Help: "Requests holding a bulkhead slot, by route."}, []string{"route"})
	m.bulkheadRej = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_bulkhead_rejected_total",
		Help: "Requests rejected by a full bulkhead."}, []string{"route"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_rate_limited_total",
		Help: "Requests refused by a limit: scope route (the route's rate_limit) or quota (the upstream's quota)."},
		[]string{"route", "scope"})
	m.quotaWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "breakwater_quota_wait_seconds",
		Help:    "Time attempts waited for an upstream quota token.",
		Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"upstream"})
	m.hedges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_hedges_total",
		Help: "Hedged attempts, by result: sent, won, lost."}, []string{"route", "result"})
	m.cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_cache_lookups_total",
		Help: "Cache lookups, by result: hit, miss, stale."}, []string{"route", "result"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_config_reloads_total",
		Help: "Configuration reloads, by result: success or failure."}, []string{"result"})
	m.lastReload = prometheus.NewGauge(prometheus.GaugeOpts{Name: "breakwater_config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful configuration load."})
	m.tierRequests = newTierRequests()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_build_info",
		Help: "Always 1; labels carry the version and the Go version."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.attempts, m.retries, m.budgetExhausted,
		m.breakerState, m.breakerTrans, m.bulkheadInFl, m.bulkheadRej, m.rateLimited, m.quotaWait, m.hedges,
		m.cacheLookups, m.reloads, m.lastReload, m.tierRequests, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	m.tokens = newTokenMetrics(reg)
	m.store = newStoreMetrics(reg)
	m.queues = newQueueMetrics(reg)
	return m
}

// CountReload counts a configuration reload (SIGHUP, POST /reload, a file
// change); a success also sets the last-success timestamp. Fanout.Reloaded
// also publishes the reload event.
func (m *Metrics) CountReload(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReload.SetToCurrentTime()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
	}
}

// Loaded notes the start-up load: it sets the last-success timestamp
// without counting a reload.
func (m *Metrics) Loaded() { m.lastReload.SetToCurrentTime() }

// Request counts one finished request (route "" when no route matched;
// tool "" when it called no MCP tool, and already bounded by the caller:
// mcp.Labels). It runs on every request, so the children it
// touches are resolved once per route and label set and then found again
// without hashing label values or formatting the code.
func (m *Metrics) Request(route, method string, code int, outcome, tool string, d time.Duration) {
	rs := m.route(route)
	k := requestLabels{method: boundedMethod(method), code: code, outcome: outcome, tool: tool}
	rs.requests.get(k, func() prometheus.Counter {
		return m.requests.WithLabelValues(route, k.method, strconv.Itoa(code), outcome, tool)
	}).Inc()
	if tool == "" {
		rs.duration.Observe(d.Seconds())
		return
	}
	rs.toolDur.get(tool, func() prometheus.Observer { return m.duration.WithLabelValues(route, tool) }).Observe(d.Seconds())
}

// routeSeries are one route's pre-resolved children. Cached children stay
// valid only as long as nobody deletes their label values: these vecs are
// never pruned (their cardinality is bounded by the config's names).
type routeSeries struct {
	duration prometheus.Observer                      // tool ""
	toolDur  seriesCache[string, prometheus.Observer] // by tool
	requests seriesCache[requestLabels, prometheus.Counter]
	attempts seriesCache[[2]string, prometheus.Counter] // upstream, result
	lookups  seriesCache[string, prometheus.Counter]    // cache result
	// inFlight is set on the route's first bulkhead report, so that routes
	// without a bulkhead have no bulkhead series.
	inFlight atomic.Value // prometheus.Gauge
}

type requestLabels struct {
	method  string
	code    int
	outcome string
	tool    string
}

func (m *Metrics) route(name string) *routeSeries {
	return m.routes.get(name, func() *routeSeries {
		return &routeSeries{duration: m.duration.WithLabelValues(name, "")}
	})
}

// seriesCache is a copy-on-write map: lookups take no lock and allocate
// nothing; a miss copies the map, which happens once per label set.
type seriesCache[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

func (c *seriesCache[K, V]) get(k K, build func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]V, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	v := build()
	next[k] = v
	c.m.Store(&next)
	return v
}

func lenOf[K comparable, V any](m *map[K]V) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// boundedMethod keeps the method label bounded: a client may send any token.
func boundedMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE":
		return m
	}
	return "OTHER"
}

// CacheLookup counts one cache lookup: result is hit, miss or stale.
func (m *Metrics) CacheLookup(route, result string) {
	m.route(route).lookups.get(result, func() prometheus.Counter {
		return m.cacheLookups.WithLabelValues(route, result)
	}).Inc()
}

// RouteRateLimited counts a request refused by the route's own rate_limit.
func (m *Metrics) RouteRateLimited(route string) { m.rateLimited.WithLabelValues(route, "route").Inc() }

// FollowBreakers makes the state gauge read the breakers at scrape time,
// so it can never disagree with /breakers: failsafe-go calls its listener
// outside its lock, so two quick transitions could otherwise land out of
// order, and a reload would leave a dropped breaker's series behind.
// list returns the running config's breakers (nil before the first load).
func (m *Metrics) FollowBreakers(list func() []*policy.Breaker) {
	m.breakerState.list.Store(&list)
}

// breakerCollector is breakwater_circuit_breaker_state, read live.
// failsafe-go opens to half-open lazily, on the first request after the
// delay: until then the breaker is open and so is its gauge, while
// /breakers says "half-open due".
type breakerCollector struct {
	desc *prometheus.Desc
	list atomic.Pointer[func() []*policy.Breaker]
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	list := c.list.Load()
	if list == nil {
		return
	}
	for _, br := range (*list)() {
		b := br.Status()
		for _, st := range []policy.State{policy.Closed, policy.Open, policy.HalfOpen} {
			v := 0.0
			if st == b.State || (b.State == policy.HalfOpenDue && st == policy.Open) {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, b.Name, string(st))
		}
	}
}

// The policy.Observer side. Calls come from request goroutines (breaker
// transitions also from failsafe-go's listener, outside its lock): each is
// a counter update. Metrics publishes no events: Fanout adds them.

func (m *Metrics) Attempt(route, upstream, result string, _ time.Duration) {
	m.route(route).attempts.get([2]string{upstream, result}, func() prometheus.Counter {
		return m.attempts.WithLabelValues(route, upstream, result)
	}).Inc()
}

func (m *Metrics) Retry(route, reason string) { m.retries.WithLabelValues(route, reason).Inc() }

func (m *Metrics) BudgetExhausted(route string) { m.budgetExhausted.WithLabelValues(route).Inc() }

func (m *Metrics) Hedge(route, result string) { m.hedges.WithLabelValues(route, result).Inc() }

func (m *Metrics) BreakerChanged(name string, from, to policy.State) {
	m.breakerTrans.WithLabelValues(name, string(from), string(to)).Inc()
}

func (m *Metrics) BulkheadInFlight(route string, n int) {
	rs := m.route(route)
	g, _ := rs.inFlight.Load().(prometheus.Gauge)
	if g == nil {
		g = m.bulkheadInFl.WithLabelValues(route)
		rs.inFlight.Store(g)
	}
	g.Set(float64(n))
}

func (m *Metrics) BulkheadRejected(route string) { m.bulkheadRej.WithLabelValues(route).Inc() }

func (m *Metrics) QuotaWaited(upstream string, d time.Duration) {
	m.quotaObs.get(upstream, func() prometheus.Observer { return m.quotaWait.WithLabelValues(upstream) }).Observe(d.Seconds())
}

func (m *Metrics) QuotaExhausted(_, route string, _ time.Duration) {
	m.rateLimited.WithLabelValues(route, "quota").Inc()
}

// QuotaPaused has no metric of its own (the pause shows in the quota's
// wait histogram); Fanout publishes it.
func (m *Metrics) QuotaPaused(string, time.Duration) {}
