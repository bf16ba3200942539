package config

import (
	"strings"
	"testing"
)

// server.body_idle_timeout (SPEC "Slow clients"): 30s unless set, and
// never 0, which would leave a stalled upload unbounded.
func TestBodyIdleTimeout(t *testing.T) {
	if got := mustParse(t, base).Server.BodyIdleTimeout.String(); got != "30s" {
		t.Errorf("default body_idle_timeout = %s, want 30s", got)
	}
	cfg := mustParse(t, "server: {body_idle_timeout: 5s}\n"+base)
	if got := cfg.Server.BodyIdleTimeout.String(); got != "5s" {
		t.Errorf("body_idle_timeout = %s, want the file's 5s", got)
	}
	if !strings.Contains(string(cfg.JSON()), `"body_idle_timeout": "5s"`) {
		t.Errorf("/config lacks body_idle_timeout:\n%s", cfg.JSON())
	}
	_, _, err := parse(t, "server:\n  body_idle_timeout: 0s\n"+base)
	checkProblems(t, problemsOf(t, err), []want{{2, "server.body_idle_timeout", "must be above 0"}})
}

// Effective.DetectBody is what JSON-RPC detection reads: retry.max_body,
// or 1MiB when no retry.max_body applies. It is derived, not a key.
func TestDetectBody(t *testing.T) {
	tests := []struct {
		name, route string
		want        Size
	}{
		{"safe defaults", "", 1 << 20},
		{"retry max_body", "    retry: {max_body: 4MiB}\n", 4 << 20},
		{"no retry", "    retry: off\n", DefaultDetectBody},
		{"retry that buffers nothing", "    retry: {max_body: 0}\n", DefaultDetectBody},
		{"one attempt keeps max_body", "    retry: {attempts: 1, max_body: 2KiB}\n", 2 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, base+tt.route)
			if got := cfg.Routes[0].Effective.DetectBody; got != tt.want {
				t.Errorf("DetectBody = %s, want %s", got, tt.want)
			}
			if strings.Contains(strings.ToLower(string(cfg.JSON())), "detect") {
				t.Errorf("/config shows DetectBody, which is no key:\n%s", cfg.JSON())
			}
		})
	}
}

// CONNECT and TRACE are refused unless a route lists them in
// match.methods, so listing them must be valid.
func TestMatchMethodsAcceptConnectAndTrace(t *testing.T) {
	cfg := mustParse(t, base+"    match: {methods: [CONNECT, TRACE, GET]}\n")
	if got := cfg.Routes[0].Match.Methods; len(got) != 3 || got[0] != "CONNECT" || got[1] != "TRACE" {
		t.Errorf("match.methods = %v", got)
	}
	_, _, err := parse(t, base+"    match: {methods: [connect]}\n")
	checkProblems(t, problemsOf(t, err), []want{{6, "routes[0].match.methods[0]", "want an upper-case HTTP method"}})
}

// A resolved rate limit's burst is final: consumers never default it.
func TestRateLimitBurstIsResolved(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want int
	}{
		{"    rate_limit: {rate: 10/1s}\n", 10},
		{"    rate_limit: {rate: 10/1s, burst: 0}\n", 10},
		{"    rate_limit: {rate: 1/1m}\n", 1},
		{"    rate_limit: {rate: 10/1s, burst: 3}\n", 3},
	} {
		if got := mustParse(t, base+tt.yaml).Routes[0].Effective.RateLimit.Burst; got != tt.want {
			t.Errorf("%s: burst %d, want %d", strings.TrimSpace(tt.yaml), got, tt.want)
		}
	}
}
