package observe

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/breakwater-proxy/breakwater/auth"
)

// tokenMetrics are the upstream credentials' series (SPEC.md Part 2,
// Upstream credentials). No label or value ever holds a token.
type tokenMetrics struct {
	requests *prometheus.CounterVec
	expiry   *tokenCollector
}

func newTokenMetrics(reg *prometheus.Registry) *tokenMetrics {
	t := &tokenMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "breakwater_upstream_token_requests_total",
			Help: "Requests to an upstream's OAuth2 token endpoint, by result: success or failure."},
			[]string{"upstream", "result"}),
		expiry: &tokenCollector{desc: prometheus.NewDesc("breakwater_upstream_token_expiry_seconds",
			"Seconds left before the upstream's current access token expires (0 without a valid token; absent when the server gave no expiry).",
			[]string{"upstream"}, nil)},
	}
	reg.MustRegister(t.requests, t.expiry)
	return t
}

// TokenRequested counts a token request (auth.Observer).
func (m *Metrics) TokenRequested(upstream string, ev auth.Event) {
	result := "success"
	if !ev.OK {
		result = "failure"
	}
	m.tokens.requests.WithLabelValues(upstream, result).Inc()
}

// FollowTokens hands over the running config's token sources, read at
// scrape time for breakwater_upstream_token_expiry_seconds, so a reload
// that drops a source drops its series.
func (m *Metrics) FollowTokens(list func() []*auth.Source) {
	m.tokens.expiry.list.Store(&list)
}

type tokenCollector struct {
	desc *prometheus.Desc
	list atomic.Pointer[func() []*auth.Source]
}

func (c *tokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *tokenCollector) Collect(ch chan<- prometheus.Metric) {
	list := c.list.Load()
	if list == nil {
		return
	}
	for _, src := range (*list)() {
		st := src.Status()
		left := 0.0
		switch {
		case st.Valid && st.Expiry.IsZero():
			continue // no expiry given: nothing to count down
		case st.Valid:
			left = max(time.Until(st.Expiry).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, left, st.Upstream)
	}
}

// TokenRequested counts a token request and publishes it on /events as a
// "token" event: which upstream, why it was asked (first, renew, forced,
// retry), whether it worked, the new token's lifetime, or what the token
// endpoint said. Never the token.
func (f *Fanout) TokenRequested(upstream string, ev auth.Event) {
	f.Metrics.TokenRequested(upstream, ev)
	data := map[string]any{"upstream": upstream, "reason": ev.Reason, "ok": ev.OK}
	if ev.OK && ev.ExpiresIn > 0 {
		data["expires_in_seconds"] = ev.ExpiresIn.Seconds()
	}
	if ev.Err != nil {
		data["error"] = ev.Err.Endpoint()
	}
	if ev.WriteErr != "" {
		data["refresh_token_file"] = ev.WriteErr
	}
	f.hub.Publish("token", data)
}
