package config

import (
	"strings"
	"testing"
	"time"
)

func TestHealthCheckDefaults(t *testing.T) {
	text := `upstreams:
  api:
    url: http://127.0.0.1:1
    health_check: { path: /status }
routes: [{ name: r, match: { path_prefix: / }, upstream: api }]
`
	cfg, _, err := Parse("t.yaml", []byte(text), noEnv, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Upstreams["api"].HealthCheck
	if h.Interval.D() != 10*time.Second || h.Timeout.D() != 2*time.Second || h.UnhealthyAfter != 3 || h.HealthyAfter != 2 {
		t.Errorf("defaults: %+v", h)
	}
}

func TestHealthCheckValidation(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{`{ interval: 1s }`, "t.yaml:4: upstreams.api.health_check.path: a health check needs a path"},
		{`{ path: status }`, "t.yaml:4: upstreams.api.health_check.path: must start with /"},
		{`{ path: /s, interval: 10ms, timeout: 5ms }`, "upstreams.api.health_check.interval: must be at least 100ms"},
		{`{ path: /s, interval: 1s, timeout: 1s }`, "upstreams.api.health_check.timeout: must be shorter than interval (1s)"},
		{`{ path: /s, unhealthy_after: 0 }`, "upstreams.api.health_check.unhealthy_after: must be at least 1"},
		{`{ path: /s, healthy_after: -1 }`, "upstreams.api.health_check.healthy_after: must be at least 1"},
	} {
		text := "upstreams:\n  api:\n    url: http://127.0.0.1:1\n    health_check: " + tc.block +
			"\nroutes: [{ name: r, match: { path_prefix: / }, upstream: api }]\n"
		_, _, err := Parse("t.yaml", []byte(text), noEnv, Overrides{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.block, err, tc.want)
		}
	}
}
