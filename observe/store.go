package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// storeMetrics are the shared store's (SPEC Part 2 "Shared state across
// replicas"): its calls, their duration, and whether it is falling back.
type storeMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	fallback prometheus.Gauge
}

func newStoreMetrics(reg prometheus.Registerer) storeMetrics {
	s := storeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_store_requests_total",
			Help: "Calls to the shared store, by operation and result (ok, error, timeout, skipped while falling back)."},
			[]string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "breakwater_store_duration_seconds",
			Help:    "Time one store call took (calls skipped while falling back are not observed), by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25}}, []string{"op"}),
		fallback: prometheus.NewGauge(prometheus.GaugeOpts{Name: "breakwater_store_fallback",
			Help: "1 while the shared store is unreachable and its fallback (store.on_error) is in use, else 0."}),
	}
	reg.MustRegister(s.requests, s.duration, s.fallback)
	return s
}

// StoreCall counts one store call (store.Observer).
func (m *Metrics) StoreCall(op, result string, d time.Duration) {
	m.store.requests.WithLabelValues(op, result).Inc()
	if result != "skipped" {
		m.store.duration.WithLabelValues(op).Observe(d.Seconds())
	}
}

// StoreState sets breakwater_store_fallback (store.Observer).
func (m *Metrics) StoreState(ok bool, _ string) {
	if ok {
		m.store.fallback.Set(0)
	} else {
		m.store.fallback.Set(1)
	}
}

// StoreState also publishes `event: store` with {"state": "ok" |
// "fallback", "error": "…"} on each change. The error is the Redis
// client's, which names an address or a timeout, never the password.
func (f *Fanout) StoreState(ok bool, reason string) {
	f.Metrics.StoreState(ok, reason)
	state := "ok"
	if !ok {
		state = "fallback"
	}
	f.hub.Publish("store", map[string]any{"state": state, "error": reason})
}
