package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

// safeEffective is SPEC.md "Safe defaults" for a route that sets nothing,
// in the JSON form /config shows.
const safeEffective = `{
  "timeout": "30s",
  "stream_idle_timeout": "5m0s",
  "retry": {
    "attempts": 3,
    "backoff": {"initial": "100ms", "max": "2s", "multiplier": 2, "jitter": 0.25},
    "on": ["connect_error", "502", "503", "504"],
    "methods": ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"],
    "per_try_timeout": "0s",
    "retry_after": {"honor": true, "max": "30s"},
    "budget": {"ratio": 0.2, "min_concurrent": 3},
    "max_body": "1MiB",
    "tools": "all"
  },
  "circuit_breaker": {
    "failure_rate": "50%",
    "min_requests": 20,
    "window": "30s",
    "delay": "10s",
    "half_open_requests": 3,
    "success_threshold": 2,
    "on": ["connect_error", "timeout", "5xx"]
  },
  "bulkhead": null,
  "rate_limit": null,
  "hedge": null,
  "cache": null,
  "fallback": null,
  "errors": "auto",
  "client_auth": "none",
  "priority": "normal"
}`

// sameJSON asserts that v marshals to the same JSON value as want.
func sameJSON(t *testing.T, what string, v any, want string) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var got, exp any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad expected JSON: %v", err)
	}
	if !reflect.DeepEqual(got, exp) {
		pretty, _ := json.MarshalIndent(got, "", "  ")
		t.Errorf("%s =\n%s\nwant\n%s", what, pretty, want)
	}
}

func TestSafeDefaultsForARouteThatSetsNothing(t *testing.T) {
	cfg := mustParse(t, base)
	e := cfg.Routes[0].Effective
	sameJSON(t, "Effective", e, safeEffective)
	if e.SharedBreaker {
		t.Error("SharedBreaker is set, but the upstream has no breaker")
	}
	if e.Retry == nil || e.CircuitBreaker == nil {
		t.Fatal("retry and circuit breaker are on by default")
	}
	if e.CircuitBreaker.FailureThreshold != 0 {
		t.Errorf("the safe breaker is time-based, got failure_threshold %d", e.CircuitBreaker.FailureThreshold)
	}
}

func TestQuick(t *testing.T) {
	cfg, warns, err := Quick("https://api.example.com", Overrides{Listen: "127.0.0.1:18080", LogLevel: "debug"})
	if err != nil {
		t.Fatalf("Quick: %v", err)
	}
	if len(warns) != 0 {
		t.Errorf("Quick warned: %v", Problems(warns))
	}
	if len(cfg.Routes) != 1 {
		t.Fatalf("Quick made %d routes, want 1", len(cfg.Routes))
	}
	r := cfg.Routes[0]
	if r.Match.PathPrefix != "/" || r.Match.Path != "" || len(r.Match.Methods) != 0 || r.Match.Host != "" || len(r.Match.Headers) != 0 {
		t.Errorf("Quick route match = %+v, want a catch-all path_prefix /", r.Match)
	}
	if r.Name == "" || r.StripPrefix != "" {
		t.Errorf("Quick route name %q, strip_prefix %q; want a name and no strip", r.Name, r.StripPrefix)
	}
	u, ok := cfg.Upstreams[r.Upstream]
	if !ok || u.URL != "https://api.example.com" || len(cfg.Upstreams) != 1 {
		t.Fatalf("Quick upstreams = %v, want one with the URL the route uses", cfg.Upstreams)
	}
	sameJSON(t, "Quick Effective", r.Effective, safeEffective)
	if cfg.Listen != "127.0.0.1:18080" || cfg.Log.Level != "debug" || cfg.Admin.Listen != "127.0.0.1:9901" {
		t.Errorf("listen %q, log level %q, admin %q: want the overrides and the admin default", cfg.Listen, cfg.Log.Level, cfg.Admin.Listen)
	}
	if cfg.Hash == "" {
		t.Error("Quick config has no hash")
	}

	_, _, err = Quick("ftp://example.com", Overrides{})
	var ps Problems
	if err == nil {
		t.Fatal("Quick with an ftp URL: want an error")
	}
	ps = problemsOf(t, err)
	if len(ps) != 1 || ps[0].Path != "upstreams.default.url" {
		t.Errorf("Quick with an ftp URL = %v, want one upstream url problem", ps)
	}
}

// route returns the effective policies of the route named name.
func route(t *testing.T, cfg *Config, name string) Effective {
	t.Helper()
	for _, r := range cfg.Routes {
		if r.Name == name {
			return r.Effective
		}
	}
	t.Fatalf("no route %q", name)
	return Effective{}
}

func TestInheritancePerKey(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, e Effective)
	}{
		{
			name: "route over upstream over defaults over safe",
			yaml: `defaults:
  timeout: 20s
  stream_idle_timeout: 1m
  errors: problem
upstreams:
  api:
    url: "http://127.0.0.1:9000"
    timeout: 10s
    stream_idle_timeout: 2m
routes:
  - name: r
    upstream: api
    stream_idle_timeout: 3m
`,
			check: func(t *testing.T, e Effective) {
				if e.StreamIdleTimeout.D() != 3*time.Minute || e.Timeout.D() != 10*time.Second || e.Errors != "problem" {
					t.Errorf("stream_idle_timeout %v (route 3m), timeout %v (upstream 10s), errors %q (defaults problem)",
						e.StreamIdleTimeout, e.Timeout, e.Errors)
				}
			},
		},
		{
			name: "retry attempts 1 overrides attempts only",
			yaml: `defaults:
  retry: {per_try_timeout: 2s, on: [502]}
upstreams:
  api:
    url: "http://127.0.0.1:9000"
    retry: {methods: [GET], max_body: 64KiB}
routes:
  - name: r
    upstream: api
    retry: {attempts: 1}
`,
			check: func(t *testing.T, e Effective) {
				r := e.Retry
				if r == nil {
					t.Fatal("retry is nil; attempts: 1 keeps the block, with one attempt")
				}
				if r.Attempts != 1 {
					t.Errorf("attempts = %d, want 1", r.Attempts)
				}
				if r.PerTryTimeout.D() != 2*time.Second || !slices.Equal(r.On, []string{"502"}) {
					t.Errorf("per_try_timeout %v, on %v: want 2s and [502] from defaults", r.PerTryTimeout, r.On)
				}
				if !slices.Equal(r.Methods, []string{"GET"}) || r.MaxBody != 64<<10 {
					t.Errorf("methods %v, max_body %v: want [GET] and 64KiB from the upstream", r.Methods, r.MaxBody)
				}
				if r.Backoff.Initial.D() != 100*time.Millisecond || r.Budget.Ratio != 0.2 || r.RetryAfter.Max.D() != 30*time.Second {
					t.Errorf("backoff %+v, budget %+v, retry_after %+v: want the safe defaults", r.Backoff, r.Budget, r.RetryAfter)
				}
			},
		},
		{
			name: "nested blocks inherit per key",
			yaml: `defaults:
  retry:
    backoff: {max: 10s}
    budget: {min_concurrent: 7}
` + base + `    retry:
      backoff: {initial: 1s}
      budget: {ratio: 0.5}
`,
			check: func(t *testing.T, e Effective) {
				b, bu := e.Retry.Backoff, e.Retry.Budget
				if b.Initial.D() != time.Second || b.Max.D() != 10*time.Second || b.Multiplier != 2 || b.Jitter != 0.25 {
					t.Errorf("backoff = %+v, want initial 1s (route), max 10s (defaults), multiplier 2 and jitter 0.25 (safe)", b)
				}
				if bu.Ratio != 0.5 || bu.MinConcurrent != 7 {
					t.Errorf("budget = %+v, want ratio 0.5 (route), min_concurrent 7 (defaults)", bu)
				}
			},
		},
		{
			name: "retry: off",
			yaml: base + "    retry: off\n",
			check: func(t *testing.T, e Effective) {
				if e.Retry != nil {
					t.Errorf("retry = %+v, want nil", *e.Retry)
				}
			},
		},
		{
			name: "retry: false",
			yaml: base + "    retry: false\n",
			check: func(t *testing.T, e Effective) {
				if e.Retry != nil {
					t.Errorf("retry = %+v, want nil", *e.Retry)
				}
			},
		},
		{
			name: "retry off on the upstream",
			yaml: `defaults:
  retry: {attempts: 5}
upstreams:
  api: {url: "http://127.0.0.1:9000", retry: off}
routes:
  - {name: r, upstream: api}
`,
			check: func(t *testing.T, e Effective) {
				if e.Retry != nil {
					t.Errorf("retry = %+v, want nil", *e.Retry)
				}
			},
		},
		{
			name: "a route turns back on what defaults turned off",
			yaml: `defaults:
  retry: off
` + base + "    retry: {attempts: 2}\n",
			check: func(t *testing.T, e Effective) {
				if e.Retry == nil || e.Retry.Attempts != 2 || e.Retry.Backoff.Max.D() != 2*time.Second {
					t.Errorf("retry = %+v, want attempts 2 and the safe defaults for the rest", e.Retry)
				}
			},
		},
		{
			name: "circuit_breaker: off",
			yaml: base + "    circuit_breaker: off\n",
			check: func(t *testing.T, e Effective) {
				if e.CircuitBreaker != nil || e.SharedBreaker {
					t.Errorf("circuit breaker = %+v (shared %v), want nil", e.CircuitBreaker, e.SharedBreaker)
				}
			},
		},
		{
			name: "cache: off",
			yaml: `defaults:
  cache: {ttl: 5m}
` + base + "    cache: off\n",
			check: func(t *testing.T, e Effective) {
				if e.Cache != nil {
					t.Errorf("cache = %+v, want nil", *e.Cache)
				}
			},
		},
		{
			name: "cache from defaults, with block defaults",
			yaml: `defaults:
  cache: {ttl: 5m, vary: [Authorization]}
` + base,
			check: func(t *testing.T, e Effective) {
				c := e.Cache
				if c == nil || c.TTL.D() != 5*time.Minute || c.MaxEntrySize != 1<<20 || c.MaxSize != 64<<20 || c.StaleIfError != 0 || !slices.Equal(c.Vary, []string{"Authorization"}) {
					t.Errorf("cache = %+v, want ttl 5m, vary [Authorization], max_entry_size 1MiB, max_size 64MiB, stale_if_error 0", c)
				}
			},
		},
		{
			name: "failure_threshold under time-based defaults gives a count-based breaker",
			yaml: `defaults:
  circuit_breaker: {failure_rate: 25%, min_requests: 5, window: 10s, delay: 3s}
` + base + "    circuit_breaker: {failure_threshold: 5}\n",
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if cb == nil {
					t.Fatal("no breaker")
				}
				if cb.FailureThreshold != 5 || cb.FailureRate != 0 || cb.MinRequests != 0 || cb.Window != 0 {
					t.Errorf("breaker = %+v, want failure_threshold 5 and no failure_rate, min_requests or window", *cb)
				}
				if cb.Delay.D() != 3*time.Second || cb.HalfOpenRequests != 3 || cb.SuccessThreshold != 2 {
					t.Errorf("breaker = %+v, want delay 3s (defaults), half_open 3 and success 2 (safe)", *cb)
				}
			},
		},
		{
			name: "failure_rate under count-based defaults gives a time-based breaker",
			yaml: `defaults:
  circuit_breaker: {failure_threshold: 4}
` + base + "    circuit_breaker: {failure_rate: 10%}\n",
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if cb.FailureThreshold != 0 || cb.FailureRate != 0.1 || cb.MinRequests != 20 || cb.Window.D() != 30*time.Second {
					t.Errorf("breaker = %+v, want failure_rate 10%%, min_requests 20, window 30s, no failure_threshold", *cb)
				}
			},
		},
		{
			name: "count-based defaults stay count-based",
			yaml: `defaults:
  circuit_breaker: {failure_threshold: 4}
` + base + "    circuit_breaker: {delay: 1s}\n",
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if cb.FailureThreshold != 4 || cb.FailureRate != 0 || cb.MinRequests != 0 || cb.Window != 0 || cb.Delay.D() != time.Second {
					t.Errorf("breaker = %+v, want failure_threshold 4, delay 1s and no time-based keys", *cb)
				}
			},
		},
		{
			name: "an upstream breaker is shared by routes that set none",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    circuit_breaker: {failure_threshold: 3}
routes:
  - {name: r, upstream: api}
`,
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if !e.SharedBreaker || cb == nil || cb.FailureThreshold != 3 || cb.Delay.D() != 10*time.Second {
					t.Errorf("breaker = %+v, shared %v; want the upstream's (failure_threshold 3, delay 10s), shared", cb, e.SharedBreaker)
				}
			},
		},
		{
			name: "a route with its own breaker does not share the upstream's",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    circuit_breaker: {failure_threshold: 3}
routes:
  - name: r
    upstream: api
    circuit_breaker: {delay: 1s}
`,
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if e.SharedBreaker || cb == nil || cb.FailureThreshold != 0 || cb.FailureRate != 0.5 || cb.Delay.D() != time.Second {
					t.Errorf("breaker = %+v, shared %v; want its own time-based one with delay 1s, not the upstream's", cb, e.SharedBreaker)
				}
			},
		},
		{
			name: "circuit_breaker: off on the upstream",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000", circuit_breaker: off}
routes:
  - {name: r, upstream: api}
`,
			check: func(t *testing.T, e Effective) {
				if e.CircuitBreaker != nil || e.SharedBreaker {
					t.Errorf("breaker = %+v, shared %v; want none", e.CircuitBreaker, e.SharedBreaker)
				}
			},
		},
		{
			name: "a route breaker under an upstream turned off is complete",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000", circuit_breaker: off}
routes:
  - {name: r, upstream: api, circuit_breaker: {delay: 2s}}
`,
			check: func(t *testing.T, e Effective) {
				cb := e.CircuitBreaker
				if cb == nil || e.SharedBreaker || cb.Delay.D() != 2*time.Second || cb.FailureRate != 0.5 || cb.MinRequests != 20 {
					t.Errorf("breaker = %+v, shared %v; want delay 2s with the safe defaults for the rest", cb, e.SharedBreaker)
				}
			},
		},
		{
			name: "an explicit zero overrides an inherited value",
			yaml: `defaults:
  bulkhead: {max_concurrent: 10, max_wait: 5s}
  rate_limit: {rate: 10/1s, max_wait: 2s}
  retry: {per_try_timeout: 2s}
` + base + `    bulkhead: {max_wait: 0s}
    rate_limit: {max_wait: 0s}
    retry: {per_try_timeout: 0s}
`,
			check: func(t *testing.T, e Effective) {
				if e.Bulkhead == nil || e.Bulkhead.MaxWait != 0 || e.Bulkhead.MaxConcurrent != 10 {
					t.Errorf("bulkhead = %+v, want max_wait 0 (route) and max_concurrent 10 (defaults)", e.Bulkhead)
				}
				if e.RateLimit == nil || e.RateLimit.MaxWait != 0 || e.RateLimit.Rate != (Rate{10, time.Second}) {
					t.Errorf("rate_limit = %+v, want max_wait 0 (route) and rate 10/1s (defaults)", e.RateLimit)
				}
				if e.Retry.PerTryTimeout != 0 {
					t.Errorf("per_try_timeout = %v, want 0 (route)", e.Retry.PerTryTimeout)
				}
			},
		},
		{
			name: "a bulkhead that only sets max_wait gets the default size",
			yaml: base + "    bulkhead: {max_wait: 1s}\n",
			check: func(t *testing.T, e Effective) {
				if e.Bulkhead == nil || e.Bulkhead.MaxConcurrent != 100 || e.Bulkhead.MaxWait.D() != time.Second {
					t.Errorf("bulkhead = %+v, want max_concurrent 100, max_wait 1s", e.Bulkhead)
				}
			},
		},
		{
			name: "rate limit defaults",
			yaml: base + "    rate_limit: {rate: 10/1s}\n",
			check: func(t *testing.T, e Effective) {
				rl := e.RateLimit
				if rl == nil || rl.Burst != 10 || rl.Key != "client_ip" || rl.MaxWait != 0 {
					t.Errorf("rate_limit = %+v, want burst 10 (one period's worth), key client_ip, max_wait 0", rl)
				}
			},
		},
		{
			name: "rate limit rate from the upstream, burst from the route",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000", rate_limit: {rate: 5/s, key: "header:X-Tenant"}}
routes:
  - {name: r, upstream: api, rate_limit: {burst: 1}}
`,
			check: func(t *testing.T, e Effective) {
				rl := e.RateLimit
				if rl == nil || rl.Rate != (Rate{5, time.Second}) || rl.Burst != 1 || rl.Key != "header:X-Tenant" {
					t.Errorf("rate_limit = %+v, want rate 5/s and key header:X-Tenant (upstream), burst 1 (route)", rl)
				}
			},
		},
		{
			name: "hedge and fallback from block defaults",
			yaml: base + "    hedge: on\n    fallback: {status: 502}\n",
			check: func(t *testing.T, e Effective) {
				if e.Hedge == nil || e.Hedge.Delay.D() != 200*time.Millisecond || e.Hedge.Max != 1 {
					t.Errorf("hedge = %+v, want delay 200ms, max 1", e.Hedge)
				}
				f := e.Fallback
				if f == nil || f.Status != 502 || f.ContentType != "application/json" || f.Body != `{"error":"unavailable"}` {
					t.Errorf("fallback = %+v, want status 502 with the default body", f)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, route(t, mustParse(t, tt.yaml), "r"))
		})
	}
}

func TestInheritanceDoesNotShareState(t *testing.T) {
	cfg := mustParse(t, `defaults:
  retry: {on: [502]}
upstreams:
  api: {url: "http://127.0.0.1:9000"}
routes:
  - {name: a, upstream: api}
  - {name: b, upstream: api}
`)
	a, b := route(t, cfg, "a"), route(t, cfg, "b")
	if a.Retry == b.Retry || a.CircuitBreaker == b.CircuitBreaker {
		t.Fatal("two routes share one policy block")
	}
	a.Retry.On[0] = "changed"
	if b.Retry.On[0] != "502" || cfg.Defaults.Retry.On[0] != "502" {
		t.Error("a route's retry.on shares its backing array with another route or with defaults")
	}
}
