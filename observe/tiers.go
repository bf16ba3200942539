package observe

import "github.com/prometheus/client_golang/prometheus"

func newTierRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_tier_requests_total",
		Help: "Requests to routes with client_auth, by route, client tier (a configured tier, anonymous, or none when refused) " +
			"and result: admitted, unauthorized, rate_limited, max_concurrent. Never by client."},
		[]string{"route", "tier", "result"})
}

// TierRequest counts the identity step of one request (proxy.ClientObserver).
// Every label is bounded: route and tier names come from the config.
func (m *Metrics) TierRequest(route, tier, result string) {
	m.tierRequests.WithLabelValues(route, tier, result).Inc()
}
