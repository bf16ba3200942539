package proxy

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
)

// healthUpstream is an upstream whose health path fails while failing is
// set; its other paths always answer 200 and are counted.
func healthUpstream(t *testing.T, failing *atomic.Bool, hits *atomic.Int64) string {
	return startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/status" {
			if failing.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = w.Write([]byte("from upstream " + r.URL.Path))
	}).URL
}

// The Bar: an upstream whose health path fails is failed fast within
// interval × unhealthy_after (with a generous margin for a slow, shared
// machine) although its data paths still answer, so no user traffic trips
// anything; the checks go on and restore it after healthy_after passes.
func TestHealthCheckFailsFastAndRestores(t *testing.T) {
	var failing atomic.Bool
	var hits atomic.Int64
	up := healthUpstream(t, &failing, &hits)
	p := startProxy(t, `
upstreams:
  crm:
    url: {{UP}}
    health_check: { path: /status, interval: 100ms, timeout: 80ms, unhealthy_after: 3, healthy_after: 2 }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: crm
    retry: { attempts: 1 }
`, map[string]string{"UP": up})
	check := p.srv.Live().Upstreams[0].Check
	testkit.WaitFor(t, 5*time.Second, "first check", func() bool { return check.Status().Status == health.Healthy })
	if resp, _ := p.get(t, "/api/a"); resp.StatusCode != 200 {
		t.Fatalf("healthy upstream: %d", resp.StatusCode)
	}

	failing.Store(true)
	budget := 3 * 100 * time.Millisecond // interval × unhealthy_after
	took := testkit.WaitFor(t, 10*budget+2*time.Second, "failed fast", func() bool {
		resp, _ := p.get(t, "/api/a")
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	t.Logf("failed fast %s after the health path broke (interval × unhealthy_after = %s)", took, budget)
	before := hits.Load()
	resp, body := p.get(t, "/api/b")
	if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("unhealthy upstream: %d %q Retry-After %q %s; want 503 circuit_open with Retry-After",
			resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), resp.Header.Get("Retry-After"), body)
	}
	if !strings.Contains(string(body), "health checks") {
		t.Errorf("detail does not say why: %s", body)
	}
	if n := hits.Load(); n != before {
		t.Errorf("%d requests reached the unhealthy upstream", n-before)
	}
	st := check.Status()
	if st.Status != health.Unhealthy || st.Result != "status 503" || st.LastChange.IsZero() {
		t.Errorf("status while failing: %+v", st)
	}

	failing.Store(false)
	took = testkit.WaitFor(t, 20*2*100*time.Millisecond+2*time.Second, "restored", func() bool {
		resp, _ := p.get(t, "/api/c")
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("restored %s after the health path recovered (interval × healthy_after = 200ms)", took)
	if st := check.Status(); st.Status != health.Healthy || st.Successes < 2 {
		t.Errorf("status after recovery: %+v", st)
	}
}

// An unhealthy upstream's routes answer from a stale entry or the
// fallback first.
func TestHealthCheckUnhealthyServesFallback(t *testing.T) {
	var failing atomic.Bool
	var hits atomic.Int64
	failing.Store(true)
	up := healthUpstream(t, &failing, &hits)
	p := startProxy(t, `
upstreams:
  crm:
    url: {{UP}}
    health_check: { path: /status, interval: 100ms, timeout: 80ms, unhealthy_after: 1, healthy_after: 1 }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: crm
    fallback: { status: 200, body: '{"cached":false}' }
`, map[string]string{"UP": up})
	check := p.srv.Live().Upstreams[0].Check
	testkit.WaitFor(t, 5*time.Second, "unhealthy", func() bool { return check.Status().Status == health.Unhealthy })
	resp, body := p.get(t, "/api/a")
	if resp.StatusCode != 200 || string(body) != `{"cached":false}` {
		t.Fatalf("got %d %s; want the fallback", resp.StatusCode, body)
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached the unhealthy upstream", hits.Load())
	}
}

// cache_only mode answers from fresh and stale cache only: zero upstream
// hits while it lasts; normal mode ends it.
func TestCacheOnlyMode(t *testing.T) {
	var failing atomic.Bool
	var hits atomic.Int64
	up := healthUpstream(t, &failing, &hits)
	p := startProxy(t, `
upstreams:
  crm: { url: "{{UP}}" }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: crm
    cache: { ttl: 300ms, stale_if_error: 1h }
`, map[string]string{"UP": up})
	if resp, _ := p.get(t, "/api/a"); resp.StatusCode != 200 {
		t.Fatalf("prime: %d", resp.StatusCode)
	}
	primed := hits.Load()
	if !p.srv.SetUpstreamMode("crm", health.ModeCacheOnly) {
		t.Fatal("SetUpstreamMode: no upstream crm")
	}
	if p.srv.SetUpstreamMode("nope", health.ModeCacheOnly) {
		t.Error("SetUpstreamMode of an unknown upstream succeeded")
	}
	if resp, body := p.get(t, "/api/a"); resp.StatusCode != 200 || resp.Header.Get("X-Breakwater-Cache") != "hit" {
		t.Errorf("fresh entry in cache_only: %d cache %q %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), body)
	}
	time.Sleep(400 * time.Millisecond) // past ttl: the entry is stale now
	if resp, body := p.get(t, "/api/a"); resp.StatusCode != 200 || resp.Header.Get("X-Breakwater-Cache") != "stale" {
		t.Errorf("stale entry in cache_only: %d cache %q %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), body)
	}
	resp, body := p.get(t, "/api/b")
	if resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" || !strings.Contains(string(body), "cache_only") {
		t.Errorf("miss in cache_only: %d %q %s; want 503 circuit_open", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), body)
	}
	if n := hits.Load() - primed; n != 0 {
		t.Errorf("%d requests reached the upstream in cache_only mode", n)
	}
	// The mode outlives a reload that keeps the upstream.
	cfg := p.srv.Config()
	if err := p.srv.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if m := p.srv.Live().Upstreams[0].Mode.String(); m != health.ModeCacheOnly {
		t.Errorf("mode after reload: %s", m)
	}
	p.srv.SetUpstreamMode("crm", health.ModeNormal)
	if resp, _ := p.get(t, "/api/b"); resp.StatusCode != 200 || hits.Load()-primed != 1 {
		t.Errorf("normal mode: %d, %d upstream hits", resp.StatusCode, hits.Load()-primed)
	}
}

// A reload that leaves health_check alone keeps the checker (and its
// state); one that drops it stops the checker: its probes end.
func TestHealthCheckerAcrossReloads(t *testing.T) {
	var probes atomic.Int64
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/status" {
			probes.Add(1)
		}
	}).URL
	yaml := `
upstreams:
  crm:
    url: ` + up + `
    health_check: { path: /status, interval: 100ms, timeout: 80ms }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: crm }
`
	p := startProxy(t, yaml, nil)
	first := p.srv.Live().Upstreams[0].Check
	p.reload(t, yaml+"# a comment changes nothing\n", nil)
	if got := p.srv.Live().Upstreams[0].Check; got != first {
		t.Error("an unchanged health_check got a new checker")
	}
	p.reload(t, strings.Replace(yaml, "    health_check: { path: /status, interval: 100ms, timeout: 80ms }\n", "", 1), nil)
	if p.srv.Live().Upstreams[0].Check != nil {
		t.Fatal("health_check removed, checker still there")
	}
	// A probe in flight at the reload may still land; then none for 5
	// intervals.
	testkit.WaitFor(t, 5*time.Second, "the dropped checker stopped", func() bool {
		n := probes.Load()
		time.Sleep(500 * time.Millisecond)
		return probes.Load() == n
	})
}

// observe.Fanout publishes health and mode changes on /events.
var _ health.Observer = (*observe.Fanout)(nil)
