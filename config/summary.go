package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// SummaryInfo is a short account of a config: what `validate` prints and
// what /reload answers.
type SummaryInfo struct {
	Listen    string            `json:"listen"`
	Admin     string            `json:"admin"`
	Upstreams []UpstreamSummary `json:"upstreams"`
	Routes    []RouteSummary    `json:"routes"`
}

// UpstreamSummary is one upstream in a summary.
type UpstreamSummary struct {
	Name      string   `json:"name"`
	URL       string   `json:"url"`
	Transport string   `json:"transport"` // fast | standard
	Policies  []string `json:"policies,omitempty"`
}

// RouteSummary is one route in a summary.
type RouteSummary struct {
	Name     string   `json:"name"`
	Match    string   `json:"match"`
	Upstream string   `json:"upstream"`
	Policies []string `json:"policies"`
}

// Summary describes c's listeners, upstreams and routes with their
// policies, redacted as /config is.
func Summary(c *Config) SummaryInfo {
	s := summarize(c.shown())
	s.Listen, s.Admin = c.Redact(s.Listen), c.Redact(s.Admin)
	for i := range s.Upstreams {
		u := &s.Upstreams[i]
		u.Name, u.URL = c.Redact(u.Name), c.Redact(u.URL)
		redactAll(c, u.Policies)
	}
	for i := range s.Routes {
		r := &s.Routes[i]
		r.Name, r.Match, r.Upstream = c.Redact(r.Name), c.Redact(r.Match), c.Redact(r.Upstream)
		redactAll(c, r.Policies)
	}
	return s
}

func redactAll(c *Config, ss []string) {
	for i := range ss {
		ss[i] = c.Redact(ss[i])
	}
}

func summarize(c *Config) SummaryInfo {
	s := SummaryInfo{Listen: c.Listen, Admin: c.Admin.Listen}
	for _, n := range slices.Sorted(maps.Keys(c.Upstreams)) {
		u := c.Upstreams[n]
		us := UpstreamSummary{Name: n, URL: u.URL, Transport: u.Transport}
		if q := u.Quota; q != nil {
			us.Policies = append(us.Policies, fmt.Sprintf("quota %s burst %d (wait ≤ %s)%s", q.Rate, q.Burst, q.MaxWait, onStore(q.Shared)))
		}
		if c := u.Concurrency; c != nil {
			us.Policies = append(us.Policies, fmt.Sprintf("concurrency %d (queue %d, wait ≤ %s)", c.MaxConcurrent, c.MaxQueue, c.MaxWait))
		}
		if a := u.Auth; a != nil && a.OAuth2 != nil {
			us.Policies = append(us.Policies, "oauth2 "+a.OAuth2.Grant)
		}
		if cb := u.CircuitBreaker; cb != nil && !cb.Off {
			us.Policies = append(us.Policies, "shared circuit breaker")
		}
		if len(u.Headers.Set) > 0 {
			keys := slices.Sorted(maps.Keys(u.Headers.Set))
			us.Policies = append(us.Policies, "sets "+strings.Join(keys, ", "))
		}
		s.Upstreams = append(s.Upstreams, us)
	}
	for _, r := range c.Routes {
		s.Routes = append(s.Routes, RouteSummary{Name: r.Name, Match: matchString(r.Match), Upstream: r.Upstream, Policies: policyList(r.Effective)})
	}
	return s
}

func matchString(m Match) string {
	var parts []string
	if len(m.Methods) > 0 {
		parts = append(parts, strings.Join(m.Methods, ","))
	}
	switch {
	case m.Path != "":
		parts = append(parts, m.Path)
	case m.PathPrefix != "":
		parts = append(parts, m.PathPrefix+"*")
	default:
		parts = append(parts, "*")
	}
	if m.Host != "" {
		parts = append(parts, "host "+m.Host)
	}
	if len(m.Headers) > 0 {
		parts = append(parts, fmt.Sprintf("%d header(s)", len(m.Headers)))
	}
	return strings.Join(parts, " ")
}

func policyList(e Effective) []string {
	p := []string{"timeout " + e.Timeout.String()}
	if r := e.Retry; r != nil && r.Attempts > 1 {
		p = append(p, fmt.Sprintf("retry %d× on %s", r.Attempts, strings.Join(r.On, ",")))
	}
	if cb := e.CircuitBreaker; cb != nil {
		scope := "route"
		if e.SharedBreaker {
			scope = "upstream"
		}
		if cb.FailureThreshold > 0 {
			p = append(p, fmt.Sprintf("breaker (%s) after %d failures", scope, cb.FailureThreshold))
		} else {
			p = append(p, fmt.Sprintf("breaker (%s) at %.0f%% of ≥%d in %s", scope, float64(cb.FailureRate)*100, cb.MinRequests, cb.Window))
		}
	}
	if b := e.Bulkhead; b != nil {
		p = append(p, fmt.Sprintf("bulkhead %d", b.MaxConcurrent))
	}
	if e.Priority != "" && e.Priority != "normal" {
		p = append(p, "priority "+e.Priority)
	}
	if l := e.RateLimit; l != nil {
		switch {
		case len(l.Rates) > 0:
			p = append(p, fmt.Sprintf("rate limit %v by %s%s", l.Rates, l.Key, onStore(l.Shared)))
		case l.Rate.IsZero(): // key: client alone: the tiers' windows
			p = append(p, "rate limit by client tier")
		default:
			p = append(p, fmt.Sprintf("rate limit %s burst %d by %s%s", l.Rate, l.Burst, l.Key, onStore(l.Shared)))
		}
	}
	if h := e.Hedge; h != nil {
		p = append(p, fmt.Sprintf("hedge after %s (max %d)", h.Delay, h.Max))
	}
	if c := e.Cache; c != nil {
		p = append(p, fmt.Sprintf("cache %s (stale %s)%s", c.TTL, c.StaleIfError, onStore(c.Shared)))
	}
	if e.Fallback != nil {
		p = append(p, fmt.Sprintf("fallback %d", e.Fallback.Status))
	}
	return p
}

// String renders the summary for a terminal.
func (s SummaryInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen %s, admin %s\n", s.Listen, s.Admin)
	fmt.Fprintf(&b, "upstreams (%d):\n", len(s.Upstreams))
	for _, u := range s.Upstreams {
		fmt.Fprintf(&b, "  %s  %s  (transport %s)", u.Name, u.URL, u.Transport)
		if len(u.Policies) > 0 {
			fmt.Fprintf(&b, "  [%s]", strings.Join(u.Policies, "; "))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "routes (%d, first match wins):\n", len(s.Routes))
	for _, r := range s.Routes {
		fmt.Fprintf(&b, "  %s  %s → %s  [%s]\n", r.Name, r.Match, r.Upstream, strings.Join(r.Policies, "; "))
	}
	return b.String()
}

// onStore marks a shared policy in the summary.
func onStore(shared bool) string {
	if shared {
		return " shared on the store"
	}
	return ""
}
