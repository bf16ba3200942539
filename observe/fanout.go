// Package observe is how breakwater is watched: Prometheus metrics
// (Metrics), the admin /events stream (Hub), and the process logger
// (NewLogger). Fanout joins the first two behind the observer interfaces
// the watched packages declare (proxy.Observer, reload.Observer), so that
// each thing is reported once and neither Metrics nor the Hub knows of the
// other. main passes it to proxy.New and reload.New, which is the compile
// time check that it implements both (observe may not import proxy: the
// proxy's own tests import observe).
package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breakwater-proxy/breakwater/policy"
)

// Fanout updates Metrics for every observation and also publishes, on the
// Hub, the events SPEC.md lists for /events: breaker transitions, quota
// exhaustion and pauses, retry-budget exhaustion and reloads. The kinds
// that can fire per request are throttled per name (see publishThrottled).
// Everything else is Metrics' own method, promoted.
type Fanout struct {
	*Metrics
	hub *Hub
}

var _ policy.Observer = (*Fanout)(nil)

// NewFanout joins m and hub; a nil hub publishes nothing. It registers
// breakwater_events_dropped_total (not in SPEC.md's list: the /events
// deliveries slow subscribers missed, since the Hub drops rather than
// blocks) on m's registry, as the one place that knows both.
func NewFanout(m *Metrics, hub *Hub) *Fanout {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "breakwater_events_dropped_total",
		Help: "Admin /events deliveries dropped because a subscriber was too slow."},
		func() float64 { return float64(hub.Dropped()) }))
	return &Fanout{Metrics: m, hub: hub}
}

func (f *Fanout) BreakerChanged(name string, from, to policy.State) {
	f.Metrics.BreakerChanged(name, from, to)
	f.hub.Publish("breaker", map[string]any{"breaker": name, "from": from, "to": to})
}

func (f *Fanout) BudgetExhausted(route string) {
	f.Metrics.BudgetExhausted(route)
	f.hub.publishThrottled("budget\x00"+route, time.Second, "budget_exhausted", func() map[string]any {
		return map[string]any{"route": route}
	})
}

func (f *Fanout) QuotaExhausted(upstream, route string, retryAfter time.Duration) {
	f.Metrics.QuotaExhausted(upstream, route, retryAfter)
	f.hub.publishThrottled("quota\x00"+upstream, time.Second, "quota_exhausted", func() map[string]any {
		return map[string]any{"upstream": upstream, "route": route, "retry_after_seconds": retryAfter.Seconds()}
	})
}

func (f *Fanout) QuotaPaused(upstream string, d time.Duration) {
	f.Metrics.QuotaPaused(upstream, d)
	f.hub.publishThrottled("pause\x00"+upstream, 250*time.Millisecond, "quota_paused", func() map[string]any {
		return map[string]any{"upstream": upstream, "pause_seconds": d.Seconds()}
	})
}

// Reloaded counts a reload (not the start-up load: see Metrics.Loaded) and
// publishes it: hash is the running config's afterwards, errs the rejected
// file's problems, already redacted (nil on success).
func (f *Fanout) Reloaded(ok bool, reason, hash string, errs []string) {
	f.CountReload(ok)
	data := map[string]any{"ok": ok, "reason": reason, "config_hash": hash}
	if !ok {
		data["errors"] = errs
	}
	f.hub.Publish("reload", data)
}

// UpstreamHealthChanged publishes an upstream's health check verdict
// (health.Observer): from and to are unknown, healthy or unhealthy;
// result is the check that decided it.
func (f *Fanout) UpstreamHealthChanged(upstream, from, to, result string) {
	f.hub.Publish("upstream_health", map[string]any{"upstream": upstream, "from": from, "to": to, "result": result})
}

// UpstreamModeChanged publishes an operator's mode change (normal or
// cache_only).
func (f *Fanout) UpstreamModeChanged(upstream, mode string) {
	f.hub.Publish("upstream_mode", map[string]any{"upstream": upstream, "mode": mode})
}
