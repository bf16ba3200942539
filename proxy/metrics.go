package proxy

import (
	"runtime"
	"strconv"
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
	hub      *Hub

	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	attempts        *prometheus.CounterVec
	retries         *prometheus.CounterVec
	budgetExhausted *prometheus.CounterVec
	breakerState    *prometheus.GaugeVec
	breakerTrans    *prometheus.CounterVec
	bulkheadInFl    *prometheus.GaugeVec
	bulkheadRej     *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
	quotaWait       *prometheus.HistogramVec
	hedges          *prometheus.CounterVec
	cacheLookups    *prometheus.CounterVec
	reloads         *prometheus.CounterVec
	lastReload      prometheus.Gauge
}

// NewMetrics registers every metric on a new registry, with the Go and
// process collectors and breakwater_build_info.
func NewMetrics(version string, hub *Hub) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, hub: hub}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_requests_total",
		Help: "Requests handled, by route, method, status code and outcome (upstream, cache_hit, stale, fallback, rejected)."},
		[]string{"route", "method", "code", "outcome"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "breakwater_request_duration_seconds",
		Help:    "Time from request to response headers and body end, by route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
		[]string{"route"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_upstream_attempts_total",
		Help: "Attempts sent upstream (first tries, retries, hedges, probes), by result: a status class or an error kind."},
		[]string{"route", "upstream", "result"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_retries_total",
		Help: "Retries scheduled, by route and the reason (status code or error kind)."}, []string{"route", "reason"})
	m.budgetExhausted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_retry_budget_exhausted_total",
		Help: "Retries or hedges refused because the route's retry budget was spent."}, []string{"route"})
	m.breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_circuit_breaker_state",
		Help: "1 for the breaker's current state (closed, open, half-open), 0 for the others."}, []string{"breaker", "state"})
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
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_build_info",
		Help: "Always 1; labels carry the version and the Go version."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.attempts, m.retries, m.budgetExhausted,
		m.breakerState, m.breakerTrans, m.bulkheadInFl, m.bulkheadRej, m.rateLimited, m.quotaWait, m.hedges,
		m.cacheLookups, m.reloads, m.lastReload, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	return m
}

// Reloaded counts a configuration load.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReload.SetToCurrentTime()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
	}
}

// request counts one finished request.
func (m *Metrics) request(route, method string, code int, outcome string, d time.Duration) {
	m.requests.WithLabelValues(route, boundedMethod(method), strconv.Itoa(code), outcome).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// boundedMethod keeps the method label bounded: a client may send any token.
func boundedMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE":
		return m
	}
	return "OTHER"
}

func (m *Metrics) cacheLookup(route, result string) {
	m.cacheLookups.WithLabelValues(route, result).Inc()
}

func (m *Metrics) routeRateLimited(route string) { m.rateLimited.WithLabelValues(route, "route").Inc() }

// setBreaker initialises a breaker's state gauge (so it exists before any transition).
func (m *Metrics) setBreaker(name string, s policy.State) {
	for _, st := range []policy.State{policy.Closed, policy.Open, policy.HalfOpen} {
		v := 0.0
		if st == s || (s == policy.HalfOpenDue && st == policy.Open) {
			v = 1
		}
		m.breakerState.WithLabelValues(name, string(st)).Set(v)
	}
}

// forgetBreaker removes a breaker that a reload dropped.
func (m *Metrics) forgetBreaker(name string) {
	for _, st := range []policy.State{policy.Closed, policy.Open, policy.HalfOpen} {
		m.breakerState.DeleteLabelValues(name, string(st))
	}
}

// The policy.Observer side.

func (m *Metrics) Attempt(route, upstream, result string, _ time.Duration) {
	m.attempts.WithLabelValues(route, upstream, result).Inc()
}

func (m *Metrics) Retry(route, reason string) { m.retries.WithLabelValues(route, reason).Inc() }

func (m *Metrics) BudgetExhausted(route string) {
	m.budgetExhausted.WithLabelValues(route).Inc()
	m.hub.publishThrottled("budget/"+route, time.Second, "budget_exhausted", map[string]any{"route": route})
}

func (m *Metrics) Hedge(route, result string) { m.hedges.WithLabelValues(route, result).Inc() }

func (m *Metrics) BreakerChanged(name string, from, to policy.State) {
	m.setBreaker(name, to)
	m.breakerTrans.WithLabelValues(name, string(from), string(to)).Inc()
	m.hub.Publish("breaker", map[string]any{"breaker": name, "from": from, "to": to})
}

func (m *Metrics) BulkheadInFlight(route string, n int) {
	m.bulkheadInFl.WithLabelValues(route).Set(float64(n))
}

func (m *Metrics) BulkheadRejected(route string) { m.bulkheadRej.WithLabelValues(route).Inc() }

func (m *Metrics) QuotaWaited(upstream string, d time.Duration) {
	m.quotaWait.WithLabelValues(upstream).Observe(d.Seconds())
}

func (m *Metrics) QuotaExhausted(upstream, route string, retryAfter time.Duration) {
	m.rateLimited.WithLabelValues(route, "quota").Inc()
	m.hub.publishThrottled("quota/"+upstream, time.Second, "quota_exhausted",
		map[string]any{"upstream": upstream, "route": route, "retry_after_seconds": retryAfter.Seconds()})
}

func (m *Metrics) QuotaPaused(upstream string, d time.Duration) {
	m.hub.publishThrottled("pause/"+upstream, 250*time.Millisecond, "quota_paused",
		map[string]any{"upstream": upstream, "pause_seconds": d.Seconds()})
}
