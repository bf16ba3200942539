package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fullConfig is close to SPEC.md's annotated example.
const fullConfig = `version: 1
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9901
  allow_remote: false
  token: "${ADMIN_TOKEN:-}"
server:
  read_header_timeout: 10s
  idle_timeout: 120s
  max_header_bytes: 64KiB
  max_body: 10MiB
  trusted_proxies: [10.0.0.0/8, 192.168.1.1]
  drain_delay: 0s
  shutdown_timeout: 30s
log: {level: info, format: json, access_log: true}
upstreams:
  cakemail:
    url: https://api.cakemail.dev
    host_header: upstream
    tls: { ca_file: "", server_name: "", insecure_skip_verify: false }
    connect_timeout: 5s
    response_header_timeout: 30s
    max_conns: 0
    max_idle_conns: 64
    idle_conn_timeout: 90s
    headers:
      set: { Authorization: "Bearer ${CAKEMAIL_TOKEN}" }
      remove: [ X-Debug ]
    quota: { rate: 100/1m, burst: 10, max_wait: 30s, honor_retry_after: true, max_pause: 60s }
    circuit_breaker: { failure_threshold: 5 }
defaults:
  timeout: 30s
  retry: { attempts: 2 }
  circuit_breaker: { failure_rate: 50%, min_requests: 20, window: 60s }
routes:
  - name: campaigns
    match:
      path_prefix: /cakemail/
      methods: [GET, POST]
      host: ""
      headers: { X-Tenant: acme }
    upstream: cakemail
    strip_prefix: /cakemail
    timeout: 10s
    stream_idle_timeout: 5m
    retry:
      attempts: 3
      backoff: { initial: 100ms, max: 5s, multiplier: 2, jitter: 0.25 }
      on: [connect_error, timeout, 502, 503, 504, 429]
      methods: [GET, HEAD, OPTIONS, PUT, DELETE]
      per_try_timeout: 2s
      retry_after: { honor: true, max: 30s }
      budget: { ratio: 0.2, min_concurrent: 3 }
      max_body: 1MiB
    circuit_breaker:
      failure_rate: 50%
      min_requests: 20
      window: 60s
      delay: 30s
      half_open_requests: 3
      success_threshold: 2
      on: [connect_error, timeout, 5xx]
    bulkhead: { max_concurrent: 10, max_wait: 5s }
    rate_limit: { rate: 10/1s, burst: 20, key: client_ip, max_wait: 0s }
    hedge: { delay: 200ms, max: 1 }
    cache:
      ttl: 5m
      stale_if_error: 24h
      max_entry_size: 1MiB
      max_size: 64MiB
      vary: [Authorization]
    fallback: { status: 503, content_type: application/json, body: '{"error":"unavailable"}' }
    errors: auto
  - name: rest
    match: { path: /health }
    upstream: cakemail
    retry: off
    cache: off
`

// fuzzSecret is what ${TOKEN} expands to while fuzzing.
const fuzzSecret = "fuzz-secret-value"

var fuzzEnv = env(map[string]string{
	"TOKEN":          fuzzSecret,
	"CAKEMAIL_TOKEN": fuzzSecret,
	"HOST":           "127.0.0.1",
	"EMPTY":          "",
})

// FuzzParse feeds arbitrary files to Parse: it must never panic, must
// finish fast, and what it accepts must be a usable, redacted config.
func FuzzParse(f *testing.F) {
	f.Add([]byte(fullConfig))
	f.Add([]byte(base))
	f.Add([]byte(secretFile))
	f.Add([]byte(""))
	f.Add([]byte("routes: [&a {name: a, upstream: u, <<: *a}]\n"))
	f.Add([]byte("upstreams: {u: {url: 'http://${HOST}:1', headers: {set: {A: '${TOKEN}'}}}}\nroutes: [{name: r, upstream: u, timeout: '${TOKEN}'}]\n"))
	f.Add([]byte(base + "    retry: {attempts: 99999999999, per_try_timeout: 1s, backoff: {multiplier: 1e308}}\n"))
	f.Add([]byte(base + "    circuit_breaker: {failure_rate: NaN%}\n    retry: {backoff: {jitter: NaN}}\n"))
	// The small exponential bombs only: a large seed makes the fuzzer spend
	// its time minimizing rather than exploring.
	f.Add([]byte(bombs["nested merges"]))
	f.Add([]byte(bombs["map merges"]))
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		cfg, warns, err := Parse("fuzz.yaml", data, fuzzEnv, Overrides{})
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Parse took %v", d)
		}
		for _, w := range warns {
			if !w.Warning || w.Msg == "" {
				t.Fatalf("bad warning %#v", w)
			}
		}
		if err != nil {
			if cfg != nil {
				t.Fatal("a config came back with an error")
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error is not a non-empty Problems: %#v", err)
			}
			// YAML also breaks lines at a lone \r (and libyaml at NEL, LS
			// and PS), and may point one past the end.
			lines := 2
			for _, r := range string(data) {
				if strings.ContainsRune("\n\r\u0085\u2028\u2029", r) {
					lines++
				}
			}
			for _, p := range ps {
				if p.Msg == "" || p.Warning || p.File != "fuzz.yaml" || p.Line < 0 || p.Line > lines {
					t.Fatalf("bad problem %#v in a file of %d lines", p, lines)
				}
			}
			return
		}
		if cfg == nil || len(cfg.Routes) == 0 || cfg.Hash == "" {
			t.Fatalf("accepted config is incomplete: %+v", cfg)
		}
		out := cfg.JSON()
		if !json.Valid(out) {
			t.Fatalf("Config.JSON() is not valid JSON: %s", out)
		}
		if usesSecret(cfg) && strings.Contains(string(out), fuzzSecret) {
			t.Fatalf("Config.JSON() shows a secret:\n%s", out)
		}
		for i, r := range cfg.Routes {
			if r == nil || r.Name == "" {
				t.Fatalf("routes[%d] accepted without a name", i)
			}
			if _, ok := cfg.Upstreams[r.Upstream]; !ok {
				t.Fatalf("routes[%d] accepted with unknown upstream %q", i, r.Upstream)
			}
			e := r.Effective
			if e.Timeout <= 0 {
				t.Fatalf("routes[%d] has timeout %v", i, e.Timeout)
			}
			if e.Retry != nil && (e.Retry.Attempts < 1 || e.Retry.Attempts > 10) {
				t.Fatalf("routes[%d] has %d attempts", i, e.Retry.Attempts)
			}
			if cb := e.CircuitBreaker; cb != nil && cb.FailureThreshold == 0 && (cb.FailureRate <= 0 || cb.FailureRate > 1 || cb.MinRequests < 1 || cb.Window <= 0) {
				t.Fatalf("routes[%d] has an unusable time-based breaker %+v", i, *cb)
			}
			if rl := e.RateLimit; rl != nil && (rl.Rate.IsZero() || rl.Burst < 1) {
				t.Fatalf("routes[%d] has an unusable rate limit %+v", i, *rl)
			}
			if b := e.Bulkhead; b != nil && b.MaxConcurrent < 1 {
				t.Fatalf("routes[%d] has an unusable bulkhead %+v", i, *b)
			}
		}
		// The same bytes give the same config.
		again, _, err := Parse("fuzz.yaml", data, fuzzEnv, Overrides{})
		if err != nil || again.Hash != cfg.Hash {
			t.Fatalf("a second Parse gave hash %v, err %v; the first gave %s", again, err, cfg.Hash)
		}
	})
}

// usesSecret reports whether fuzzSecret sits in a secret of cfg, which
// makes it a secret wherever else it shows up.
func usesSecret(cfg *Config) bool {
	if strings.Contains(cfg.Admin.Token.Reveal(), fuzzSecret) {
		return true
	}
	for _, u := range cfg.Upstreams {
		for _, v := range u.Headers.Set {
			if strings.Contains(v.Reveal(), fuzzSecret) {
				return true
			}
		}
	}
	return false
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"100/1m", "10/1s", "5/s", "5/.5s", "1/h", "0/1s", "-1/1s", "1/", "/", "", "9223372036854775807/1ns", "1/2562047h47m16.854775807s", "5/µs", " 3 / 2s "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if r != (Rate{}) {
				t.Fatalf("ParseRate(%q) failed but returned %+v", s, r)
			}
			return
		}
		if r.N <= 0 || r.Period <= 0 || r.IsZero() || r.PerSecond() <= 0 {
			t.Fatalf("ParseRate(%q) = %+v, not a usable rate", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %+v, which prints as %q and parses back as %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1024", "64KiB", "10MiB", "1GiB", "3KB", "5MB", "7GB", "12B", "-1", "1.5MiB", "KiB", "", "8589934592GiB", "9223372036854775807", " 10 MiB "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		back, err := ParseSize(Size(n).String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, which prints as %q and parses back as %d, %v", s, n, Size(n).String(), back, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"250ms", "30s", "1h30m", "0", "0s", "-1s", "10", "1d", "", ".5s", "2562047h47m16.854775807s", "2562047h47m16.854775808s", " 5m "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) failed but returned %v", s, d)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v, which parses back as %v, %v", s, d, back, err)
		}
	})
}
