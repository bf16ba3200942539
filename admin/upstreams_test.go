package admin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/admin"
)

// health reads GET /health.
func (e *env) healthReport() (int, admin.HealthReport) {
	e.t.Helper()
	code, body := e.call("GET", "/health", "")
	var rep admin.HealthReport
	if err := json.Unmarshal(body, &rep); err != nil {
		e.t.Fatalf("/health: %v: %s", err, body)
	}
	return code, rep
}

// POST /upstreams/{name}?mode=cache_only takes the token like every admin
// POST, answers 404 for an unknown upstream and 400 for an unknown mode;
// /health says degraded meanwhile, /events publishes the change, and the
// upstream's routes are answered without it.
func TestUpstreamModeCacheOnly(t *testing.T) {
	e := newEnv(t, "admin: { token: let-me-in }\n"+openConfig)
	sub := e.hub.Subscribe(16)
	defer sub.Close()
	if code, body := e.call("POST", "/upstreams/api?mode=cache_only", ""); code != 401 {
		t.Errorf("without the token: %d %s, want 401", code, body)
	}
	if code, body := e.call("POST", "/upstreams/nope?mode=cache_only", "let-me-in"); code != 404 {
		t.Errorf("unknown upstream: %d %s, want 404", code, body)
	}
	if code, body := e.call("POST", "/upstreams/api?mode=off", "let-me-in"); code != 400 {
		t.Errorf("unknown mode: %d %s, want 400", code, body)
	}
	if _, rep := e.healthReport(); rep.Status != "healthy" || rep.Upstreams[0].Mode != "normal" {
		t.Fatalf("before: %+v", rep)
	}
	if code, body := e.call("POST", "/upstreams/api?mode=cache_only", "let-me-in"); code != 200 {
		t.Fatalf("cache_only: %d %s", code, body)
	}
	code, rep := e.healthReport()
	if code != 200 || rep.Status != "degraded" || rep.Upstreams[0].Status != "degraded" || rep.Upstreams[0].Mode != "cache_only" {
		t.Errorf("/health in cache_only: %d %+v", code, rep)
	}
	if resp, body := e.get("/api/x"); resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Errorf("a route of a cache_only upstream without cache: %d %s", resp.StatusCode, body)
	}
	select {
	case m := <-sub.C:
		if m.Type != "upstream_mode" || !strings.Contains(string(m.JSON), `"mode":"cache_only"`) {
			t.Errorf("event %s %s", m.Type, m.JSON)
		}
	case <-time.After(5 * time.Second):
		t.Error("no upstream_mode event")
	}
	if code, body := e.call("POST", "/upstreams/api?mode=normal", "let-me-in"); code != 200 {
		t.Fatalf("normal: %d %s", code, body)
	}
	if _, rep := e.healthReport(); rep.Status != "healthy" || rep.Upstreams[0].Mode != "normal" {
		t.Errorf("after normal: %+v", rep)
	}
	if resp, body := e.get("/api/x"); resp.StatusCode != 200 {
		t.Errorf("normal mode: %d %s", resp.StatusCode, body)
	}
}

// /health shows each upstream's check result, latency and last change,
// and /events the change; an upstream failing its checks is unhealthy.
func TestHealthShowsChecks(t *testing.T) {
	e := newEnv(t, `version: 1
upstreams:
  api:
    url: "{{UP}}"
    health_check: { path: /fail-health, interval: 200ms, timeout: 150ms, unhealthy_after: 3 }
  other:
    url: "{{UP}}"
    health_check: { path: /ok, interval: 100ms, timeout: 80ms }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: api }
  - { name: other, match: { path_prefix: /other }, upstream: other }
`)
	sub := e.hub.Subscribe(16)
	defer sub.Close()
	deadline := time.Now().Add(10 * time.Second)
	var rep admin.HealthReport
	for {
		_, rep = e.healthReport()
		if rep.Upstreams[0].Status == "unhealthy" && rep.Upstreams[1].Check.Status == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health never showed api unhealthy and other healthy: %+v", rep)
		}
		time.Sleep(20 * time.Millisecond)
	}
	api := rep.Upstreams[0].Check
	if rep.Status != "degraded" || api.Result != "status 503" || api.LastChange == nil || api.LastCheck == nil || api.Failures < 3 {
		t.Errorf("/health: %s %+v", rep.Status, api)
	}
	if other := rep.Upstreams[1].Check; other.Result != "ok" || other.LatencyMs <= 0 {
		t.Errorf("other: %+v", other)
	}
	for {
		select {
		case m := <-sub.C:
			if m.Type == "upstream_health" {
				if !strings.Contains(string(m.JSON), `"to":"unhealthy"`) || !strings.Contains(string(m.JSON), `"upstream":"api"`) {
					t.Errorf("event %s", m.JSON)
				}
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no upstream_health event")
		}
	}
}
