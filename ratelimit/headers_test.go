package ratelimit

import (
	"net/http"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

func TestSetHeaders(t *testing.T) {
	tenPerSecond := config.Rate{N: 10, Period: time.Second}
	tests := []struct {
		name       string
		route      string
		policy     config.Rate
		burst      int
		d          Decision
		policyHdr  string
		limitHdr   string
		retryAfter string
	}{
		{
			name: "allowed, tokens left: t is until full", route: "api",
			policy: tenPerSecond, burst: 20,
			d:         Decision{Allowed: true, Remaining: 7, Reset: 1250 * time.Millisecond},
			policyHdr: `"api";q=10;w=1`, limitHdr: `"api";r=7;t=2`,
		},
		{
			name: "allowed, last token: t is until the next one", route: "api",
			policy: tenPerSecond, burst: 20,
			// 0.5 tokens left: full in 1.95s, the next token in 50ms.
			d:         Decision{Allowed: true, Remaining: 0, Reset: 1950 * time.Millisecond},
			policyHdr: `"api";q=10;w=1`, limitHdr: `"api";r=0;t=1`,
		},
		{
			name: "limited: t and Retry-After agree", route: "api",
			policy: tenPerSecond, burst: 20,
			d:         Decision{RetryAfter: 2100 * time.Millisecond, Reset: 4 * time.Second},
			policyHdr: `"api";q=10;w=1`, limitHdr: `"api";r=0;t=3`, retryAfter: "3",
		},
		{
			name: "tiny RetryAfter is still 1", route: "api",
			policy: tenPerSecond, burst: 10,
			d:         Decision{RetryAfter: time.Millisecond},
			policyHdr: `"api";q=10;w=1`, limitHdr: `"api";r=0;t=1`, retryAfter: "1",
		},
		{
			name: "per minute", route: "slow",
			policy: config.Rate{N: 100, Period: time.Minute}, burst: 100,
			d:         Decision{Allowed: true, Remaining: 99, Reset: 600 * time.Millisecond},
			policyHdr: `"slow";q=100;w=60`, limitHdr: `"slow";r=99;t=1`,
		},
		{
			name: "sub-second period is scaled to whole seconds", route: "fast",
			policy: config.Rate{N: 10, Period: 500 * time.Millisecond}, burst: 10,
			d:         Decision{Allowed: true, Remaining: 9, Reset: 50 * time.Millisecond},
			policyHdr: `"fast";q=20;w=1`, limitHdr: `"fast";r=9;t=1`,
		},
		{
			name: "route name is escaped", route: "a\"b\\c\x01é",
			policy: tenPerSecond, burst: 10,
			d:         Decision{Allowed: true, Remaining: 9, Reset: 100 * time.Millisecond},
			policyHdr: `"a\"b\\c???";q=10;w=1`, limitHdr: `"a\"b\\c???";r=9;t=1`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			SetHeaders(h, tt.route, tt.policy, tt.burst, tt.d)
			if got := h.Get("RateLimit-Policy"); got != tt.policyHdr {
				t.Errorf("RateLimit-Policy = %q, want %q", got, tt.policyHdr)
			}
			if got := h.Get("RateLimit"); got != tt.limitHdr {
				t.Errorf("RateLimit = %q, want %q", got, tt.limitHdr)
			}
			if got := h.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
		})
	}
}
