package config

import (
	"reflect"
	"strings"
	"time"
)

// HealthCheck is an upstream's active health check: breakwater asks
// Path every Interval and, after UnhealthyAfter failures in a row, fails
// that upstream's requests fast (stale cache or fallback first) until
// HealthyAfter successes in a row restore it. A nil *HealthCheck means no
// checks: only user traffic (breakers) judges the upstream.
type HealthCheck struct {
	// Path is asked with GET under the upstream's url; an answer 2xx or
	// 3xx within Timeout is a success, anything else a failure. Required.
	Path string `yaml:"path" json:"path"`
	// Interval is the time between checks (each jittered by ±10%).
	Interval Duration `yaml:"interval" json:"interval"`
	// Timeout bounds one check; it must be shorter than Interval.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// UnhealthyAfter failures in a row mark the upstream unhealthy.
	UnhealthyAfter int `yaml:"unhealthy_after" json:"unhealthy_after"`
	// HealthyAfter successes in a row mark it healthy again.
	HealthyAfter int `yaml:"healthy_after" json:"healthy_after"`

	fields
}

// healthCheckDefaults fill a health_check block.
const healthCheckDefaults = `
interval: 10s             # finds an outage within half a minute at 3 failures, costs the upstream little
timeout: 2s               # a health endpoint that takes longer is not healthy
unhealthy_after: 3        # one lost packet is not an outage
healthy_after: 2          # one lucky answer is not a recovery
`

// applyHealthDefaults fills u's health_check keys the file left unset.
func applyHealthDefaults(u *Upstream) {
	if u.HealthCheck == nil {
		return
	}
	var d HealthCheck
	mustDecode(healthCheckDefaults, &d)
	inherit(reflect.ValueOf(u.HealthCheck).Elem(), reflect.ValueOf(&d).Elem())
}

// healthCheck validates an upstream's health_check block.
func (v *validator) healthCheck(path string, h *HealthCheck) {
	if h == nil {
		return
	}
	p := path + ".health_check"
	switch {
	case h.Path == "":
		v.errorf(p+".path", "a health check needs a path such as /healthz")
	case !strings.HasPrefix(h.Path, "/"):
		v.errorf(p+".path", "must start with /")
	case strings.ContainsAny(h.Path, " #"):
		v.errorf(p+".path", "must be a URL path (no spaces or fragment)")
	}
	if h.Interval.D() < 100*time.Millisecond {
		v.errorf(p+".interval", "must be at least 100ms")
	}
	switch {
	case h.Timeout.D() <= 0:
		v.errorf(p+".timeout", "must be positive")
	case h.Timeout.D() >= h.Interval.D():
		v.errorf(p+".timeout", "must be shorter than interval (%s)", h.Interval)
	}
	if h.UnhealthyAfter < 1 {
		v.errorf(p+".unhealthy_after", "must be at least 1")
	}
	if h.HealthyAfter < 1 {
		v.errorf(p+".healthy_after", "must be at least 1")
	}
}
