package admin_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/admin"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/policy"
)

const breakerConfig = `version: 1
admin:
  token: "let-me-in"
upstreams:
  echo: { url: "{{UP}}" }
routes:
  - name: delta
    match: { path_prefix: /delta }
    upstream: echo
    retry: off
    circuit_breaker: { failure_threshold: 2, delay: 300ms, half_open_requests: 2, success_threshold: 2 }
`

// TestBreakerLifecycle follows one breaker through closed → open →
// half-open → closed, driven by real upstream answers. At each step
// /breakers and breakwater_circuit_breaker_state agree, and two /events
// subscribers get the transitions in order.
func TestBreakerLifecycle(t *testing.T) {
	e := newEnv(t, breakerConfig)
	subs := []*sse{e.subscribe(), e.subscribe()}

	check := func(step string, want policy.State, gauge string) policy.BreakerStatus {
		t.Helper()
		b := e.breaker("delta")
		if b.State != want {
			t.Fatalf("%s: /breakers state %q, want %q", step, b.State, want)
		}
		if g := e.breakerGauge("delta"); g != gauge {
			t.Fatalf("%s: breakwater_circuit_breaker_state says %q, want %q", step, g, gauge)
		}
		if b.Scope != "route" {
			t.Fatalf("%s: scope %q, want route", step, b.Scope)
		}
		return b
	}
	check("start", policy.Closed, "closed")

	for range 2 {
		if resp, _ := e.get("/delta/fail"); resp.StatusCode != 503 {
			t.Fatalf("/delta/fail: %d", resp.StatusCode)
		}
	}
	b := check("after 2 failures", policy.Open, "open")
	if b.Failures != 2 || b.RetryIn <= 0 || b.RetryIn > 0.3 {
		t.Errorf("open breaker: failures %d, retry_in_seconds %v; want 2 and (0, 0.3]", b.Failures, b.RetryIn)
	}
	if resp, _ := e.get("/delta/ok"); resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Fatalf("/delta/ok while open: %d %q, want 503 circuit_open", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}

	// failsafe-go moves to half-open lazily, on the next request after the
	// delay; until then /breakers says so honestly and the gauge, which
	// has no such state, still says open.
	testkit.WaitFor(t, 5*time.Second, "delta to become half-open due", func() bool {
		return e.breaker("delta").State == policy.HalfOpenDue
	})
	if b := check("delay passed", policy.HalfOpenDue, "open"); b.RetryIn != 0 {
		t.Errorf("half-open due: retry_in_seconds %v, want 0", b.RetryIn)
	}

	// One successful probe of the two needed: half-open.
	if resp, _ := e.get("/delta/ok"); resp.StatusCode != 200 {
		t.Fatalf("first probe: %d", resp.StatusCode)
	}
	check("after 1 probe success", policy.HalfOpen, "half-open")
	if resp, _ := e.get("/delta/ok"); resp.StatusCode != 200 {
		t.Fatalf("second probe: %d", resp.StatusCode)
	}
	check("after 2 probe successes", policy.Closed, "closed")

	want := [][2]string{{"closed", "open"}, {"open", "half-open"}, {"half-open", "closed"}}
	for i, s := range subs {
		var lastID uint64
		for _, w := range want {
			ev := s.next(t, 5*time.Second, func(ev observe.Event) bool { return ev.Type == "breaker" && ev.Data["breaker"] == "delta" })
			if ev.Data["from"] != w[0] || ev.Data["to"] != w[1] {
				t.Fatalf("subscriber %d: event %v, want %s → %s", i, ev.Data, w[0], w[1])
			}
			if ev.ID <= lastID {
				t.Fatalf("subscriber %d: event id %d after %d", i, ev.ID, lastID)
			}
			lastID = ev.ID
		}
	}
	for _, tr := range want {
		if got := e.metric("breakwater_circuit_breaker_transitions_total", map[string]string{"breaker": "delta", "from": tr[0], "to": tr[1]}); got != 1 {
			t.Errorf("transitions_total{%s→%s} = %v, want 1", tr[0], tr[1], got)
		}
	}
}

// TestForceBreaker: POST /breakers/{name}?state= forces a state, only with
// the token; other methods get 405, bad input 400, unknown names 404.
func TestForceBreaker(t *testing.T) {
	e := newEnv(t, breakerConfig)
	sub := e.subscribe()

	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"POST", "/breakers/delta?state=open", "", 401},
		{"POST", "/breakers/delta?state=open", "wrong", 401},
		{"GET", "/breakers/delta", "let-me-in", 405},
		{"PUT", "/breakers/delta?state=open", "", 405},
		{"GET", "/reload", "", 405},
		{"DELETE", "/cache/purge", "let-me-in", 405},
		{"POST", "/reload", "", 401},
		{"POST", "/cache/purge", "", 401},
		{"POST", "/breakers/delta?state=ajar", "let-me-in", 400},
		{"POST", "/breakers/nope?state=open", "let-me-in", 404},
	} {
		if code, body := e.call(c.method, c.path, c.token); code != c.want {
			t.Errorf("%s %s (token %q): %d %s, want %d", c.method, c.path, c.token, code, body, c.want)
		}
	}
	if st := e.breaker("delta").State; st != policy.Closed {
		t.Fatalf("refused calls changed the breaker: %s", st)
	}

	for _, st := range []policy.State{policy.Open, policy.HalfOpen, policy.Closed} {
		code, body := e.call("POST", "/breakers/delta?state="+string(st), "let-me-in")
		var b policy.BreakerStatus
		_ = json.Unmarshal(body, &b)
		if code != 200 || b.Name != "delta" || b.State != st {
			t.Fatalf("force %s: %d %s", st, code, body)
		}
		if g := e.breakerGauge("delta"); g != string(st) {
			t.Errorf("force %s: gauge says %s", st, g)
		}
		ev := sub.next(t, 5*time.Second, func(ev observe.Event) bool { return ev.Type == "breaker" })
		if ev.Data["to"] != string(st) {
			t.Errorf("force %s: event %v", st, ev.Data)
		}
	}
	if resp, _ := e.get("/delta/ok"); resp.StatusCode != 200 {
		t.Errorf("after forcing closed: %d", resp.StatusCode)
	}
}

const healthConfig = `version: 1
upstreams:
  one: { url: "{{UP}}" }
  two: { url: "{{UP}}" }
  plain: { url: "{{UP}}" }
routes:
  - { name: r1, match: { path_prefix: /one }, upstream: one, circuit_breaker: { delay: 1m } }
  - { name: r2, match: { path_prefix: /two }, upstream: two, circuit_breaker: { delay: 1m } }
`

// TestHealth: healthy 200 → degraded 200 (a breaker open or half-open) →
// unhealthy 503 (every upstream's breakers open), with the config hash.
func TestHealth(t *testing.T) {
	e := newEnv(t, healthConfig)
	type report struct {
		Status     string `json:"status"`
		ConfigHash string `json:"config_hash"`
		LastReload *struct {
			OK     bool   `json:"ok"`
			Reason string `json:"reason"`
		} `json:"last_reload"`
		Upstreams []admin.UpstreamHealth `json:"upstreams"`
	}
	health := func(step string, wantCode int, want string, ups map[string]string) {
		t.Helper()
		code, body := e.call("GET", "/health", "")
		var r report
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("%s: %v: %s", step, err, body)
		}
		if code != wantCode || r.Status != want {
			t.Fatalf("%s: %d %q, want %d %q: %s", step, code, r.Status, wantCode, want, body)
		}
		if r.ConfigHash != e.srv.Config().Hash || r.LastReload == nil || !r.LastReload.OK || r.LastReload.Reason != "start" {
			t.Fatalf("%s: hash / last_reload wrong: %s", step, body)
		}
		got := map[string]string{}
		for _, u := range r.Upstreams {
			got[u.Name] = u.Status
		}
		if fmt.Sprint(got) != fmt.Sprint(ups) {
			t.Fatalf("%s: upstreams %v, want %v", step, got, ups)
		}
	}
	force := func(name, state string) {
		t.Helper()
		if code, body := e.call("POST", "/breakers/"+name+"?state="+state, ""); code != 200 {
			t.Fatalf("force %s %s: %d %s", name, state, code, body)
		}
	}
	// An upstream without breakers is always healthy, so "plain" would
	// keep the whole from ever being unhealthy; it is only in the first
	// steps.
	health("all closed", 200, "healthy", map[string]string{"one": "healthy", "two": "healthy", "plain": "healthy"})
	force("r1", "half-open")
	health("r1 half-open", 200, "degraded", map[string]string{"one": "degraded", "two": "healthy", "plain": "healthy"})
	force("r1", "open")
	health("r1 open", 200, "degraded", map[string]string{"one": "unhealthy", "two": "healthy", "plain": "healthy"})

	e.write(`version: 1
upstreams:
  one: { url: "{{UP}}" }
  two: { url: "{{UP}}" }
routes:
  - { name: r1, match: { path_prefix: /one }, upstream: one, circuit_breaker: { delay: 1m } }
  - { name: r2, match: { path_prefix: /two }, upstream: two, circuit_breaker: { delay: 1m } }
`)
	if code, body := e.call("POST", "/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if e.breaker("r1").State != policy.Open {
		t.Fatal("r1 lost its state in a reload that removed another upstream")
	}
	force("r2", "open")
	code, body := e.call("GET", "/health", "")
	if code != 503 || !json.Valid(body) {
		t.Fatalf("all open: %d %s, want 503", code, body)
	}
	var r report
	_ = json.Unmarshal(body, &r)
	if r.Status != "unhealthy" || r.LastReload == nil || r.LastReload.Reason != "admin" {
		t.Fatalf("all open: %s", body)
	}
	force("r2", "closed")
	if code, _ := e.call("GET", "/health", ""); code != 200 {
		t.Fatalf("r2 closed again: %d, want 200", code)
	}
}
