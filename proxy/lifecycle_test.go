package proxy

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// What a Server starts and owns: health checkers, token requests, store
// clients and their probes, tracers, upstream connections. Issue 20.

// ownGoroutines lists the stacks of goroutines running code the Server
// started: anything left of them once Close returned has no owner.
func ownGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, mark := range []string{
			"health.(*Checker)", "store.(*Client).probe", "auth.(*Source).fetch",
			"go.opentelemetry.io/otel/sdk/trace", "lifecycle.",
		} {
			if strings.Contains(g, mark) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// A reload that drops an upstream stops its health checks: its health
// path hears no more probes. The upstream the reload keeps keeps its
// checker (the same one) and its probes.
func TestReloadStopsDroppedHealthChecks(t *testing.T) {
	var kept, dropped atomic.Int64
	counting := func(n *atomic.Int64) string {
		return startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/status" {
				n.Add(1)
			}
		}).URL
	}
	vars := map[string]string{"KEPT": counting(&kept), "GONE": counting(&dropped)}
	const check = "health_check: { path: /status, interval: 100ms, timeout: 80ms }"
	both := `
upstreams:
  kept: { url: "{{KEPT}}", ` + check + ` }
  gone: { url: "{{GONE}}", ` + check + ` }
routes:
  - { name: a, match: { path_prefix: /a }, upstream: kept }
  - { name: b, match: { path_prefix: /b }, upstream: gone }
`
	p := startProxy(t, both, vars)
	first := p.srv.table.Load().upstreams["kept"].check
	testkit.WaitFor(t, 5*time.Second, "probes on both", func() bool { return kept.Load() >= 3 && dropped.Load() >= 3 })

	p.reload(t, `
upstreams:
  kept: { url: "{{KEPT}}", `+check+` }
routes:
  - { name: a, match: { path_prefix: /a }, upstream: kept }
`, vars)
	if got := p.srv.table.Load().upstreams["kept"].check; got != first {
		t.Error("the reload left kept's health_check alone, yet it got a new checker")
	}
	time.Sleep(300 * time.Millisecond) // a probe in flight at the reload lands (timeout 80ms)
	d0, k0 := dropped.Load(), kept.Load()
	time.Sleep(1500 * time.Millisecond) // 15 intervals
	d1, k1 := dropped.Load(), kept.Load()
	t.Logf("in the 1.5s after the reload: %d probes on the dropped upstream, %d on the kept one", d1-d0, k1-k0)
	if d1 != d0 {
		t.Errorf("the dropped upstream got %d probes after the reload; want 0", d1-d0)
	}
	if k1-k0 < 5 {
		t.Errorf("the kept upstream got %d probes in 1.5s at a 100ms interval; its checker stopped", k1-k0)
	}
}

// Server.Close returns only once everything the Server started has ended:
// the checkers of the running config, a token request in flight, the
// store clients (the running one and the one a reload dropped, both
// probing a store that is down), and the tracers (the running one and the
// one a reload replaced, still flushing to a slow collector).
func TestCloseWaitsForWhatItStarted(t *testing.T) {
	testkit.CheckLeaks(t) // the rest (connections, servers) once the test has cleaned up
	recv := newOTLPReceiver(t)
	slow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second) // a collector that takes its time: a flush waits for it
		_, _ = io.Copy(io.Discard, r.Body)
	})
	var tokenAsked atomic.Int64
	token := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		tokenAsked.Add(1)
		time.Sleep(1500 * time.Millisecond) // outlasts the route's timeout: the request is still in flight at Close
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"t","token_type":"bearer","expires_in":3600}`)
	})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	vars := map[string]string{
		"UP": up.URL, "TOKEN": token.URL, "SLOW": slow.URL, "OTLP": recv.url,
		"REDIS": "redis://" + testkit.FreeAddr(t), // down: the store client falls back and probes
	}
	const yaml = `
tracing: { otlp_endpoint: "{{COLLECTOR}}", service_name: {{SERVICE}} }
store:
  redis: { url: "{{REDIS}}", timeout: {{STORE_TIMEOUT}} }
upstreams:
  api:
    url: "{{UP}}"
    transport: standard
    health_check: { path: /status, interval: 100ms, timeout: 80ms }
  authed:
    url: "{{UP}}"
    auth: { oauth2: { token_url: "{{TOKEN}}/token", client_id: id, client_secret: s } }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: api
    rate_limit: { rate: 100/1s, shared: true }
  - { name: authed, match: { path_prefix: /authed }, upstream: authed, timeout: 200ms }
`
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range vars {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	p := startProxy(t, yaml, with("COLLECTOR", slow.URL, "SERVICE", "first", "STORE_TIMEOUT", "100ms"))
	for range 3 {
		if resp, body := p.get(t, "/api/x"); resp.StatusCode != 200 {
			t.Fatalf("GET /api/x: %d %s", resp.StatusCode, body)
		}
	}
	// A new store client and a new tracer: the old ones are dropped, each
	// with work in progress (a probe, spans to flush).
	p.reload(t, yaml, with("COLLECTOR", recv.url, "SERVICE", "second", "STORE_TIMEOUT", "150ms"))
	for range 3 {
		if resp, body := p.get(t, "/api/y"); resp.StatusCode != 200 {
			t.Fatalf("GET /api/y: %d %s", resp.StatusCode, body)
		}
	}
	if resp, _ := p.get(t, "/authed/x"); resp.StatusCode != http.StatusGatewayTimeout && resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("GET /authed/x with a stalled token endpoint: %d", resp.StatusCode)
	}
	if tokenAsked.Load() != 1 {
		t.Fatalf("token endpoint asked %d times, want 1", tokenAsked.Load())
	}
	if left := ownGoroutines(); len(left) == 0 {
		t.Fatal("nothing running before Close: the test proves nothing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := p.srv.Close(ctx)
	took := time.Since(start)
	left := ownGoroutines()
	t.Logf("Close took %s (err %v); %d of the Server's goroutines still running after it returned", took, err, len(left))
	for _, g := range left {
		t.Errorf("still running after Close returned:\n%s", g)
	}
	if err != nil {
		t.Errorf("Close: %v", err)
	}
}

// Close gives up when its context ends, though something it closes
// hangs (a collector that never answers a flush).
func TestCloseBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	hung := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // before the collector's Close, which waits for its handlers
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	p := startProxy(t, `
tracing: { otlp_endpoint: "{{OTLP}}", service_name: hung }
upstreams: { api: { url: "{{UP}}" } }
routes: [{ name: api, match: { path_prefix: / }, upstream: api }]
`, map[string]string{"UP": up.URL, "OTLP": hung.URL})
	if resp, _ := p.get(t, "/x"); resp.StatusCode != 200 {
		t.Fatalf("GET /x: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.srv.Close(ctx)
	took := time.Since(start)
	t.Logf("Close with a hung collector and a 300ms context: %s, err %v", took, err)
	if took > 3*time.Second {
		t.Errorf("Close took %s with a 300ms context", took)
	}
	if err == nil {
		t.Error("Close reported nothing though the flush did not finish")
	}
}
