package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breakwater-proxy/breakwater/policy"
)

// queueMetrics are the queues' series (SPEC.md Part 2, Queues and
// priority): scope bulkhead (name: a route, or an upstream for its
// concurrency) or quota (name: an upstream). Only callers that actually
// wait are counted: a slot or token granted at once is no sample.
type queueMetrics struct {
	waiting *prometheus.GaugeVec
	wait    *prometheus.HistogramVec
}

func newQueueMetrics(reg *prometheus.Registry) *queueMetrics {
	q := &queueMetrics{
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_queue_waiting",
			Help: "Callers waiting in a queue now, by scope (bulkhead, quota), name (route or upstream) and priority."},
			[]string{"scope", "name", "priority"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "breakwater_queue_wait_seconds",
			Help:    "Time callers waited in a queue, served or turned away, by scope, name and priority.",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
			[]string{"scope", "name", "priority"}),
	}
	reg.MustRegister(q.waiting, q.wait)
	return q
}

// QueueWaiting moves the waiting gauge by delta (policy.Observer). A
// delta rather than a value: joins and leaves on several goroutines then
// never overwrite each other's count.
func (m *Metrics) QueueWaiting(scope, name string, prio policy.Priority, delta int) {
	m.queues.waiting.WithLabelValues(scope, name, prio.String()).Add(float64(delta))
}

// QueueWaited observes one caller's time in a queue (policy.Observer).
func (m *Metrics) QueueWaited(scope, name string, prio policy.Priority, d time.Duration) {
	m.queues.wait.WithLabelValues(scope, name, prio.String()).Observe(d.Seconds())
}
