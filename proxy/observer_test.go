package proxy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/clients"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// requestCounter decorates an Observer the way a caller would: it adds
// one thing (counting requests) and hands everything else to the observer
// it embeds.
type requestCounter struct {
	proxy.Observer
	n atomic.Int64
}

func (c *requestCounter) Request(route, method string, code int, outcome, tool string, d time.Duration) {
	c.n.Add(1)
	c.Observer.Request(route, method, code, outcome, tool, d)
}

// Everything the Server reports goes to the one Observer New is given,
// whatever wraps it (issue 20). Before, the tier counts, token sources,
// health and mode changes and store state were found on it by type
// assertion: behind a decorator like this one they went unheard, with no
// error anywhere (breakwater_tier_requests_total absent, no upstream_mode
// event).
func TestDecoratedObserverHearsEverything(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(up.Close)
	keysFile := filepath.Join(t.TempDir(), "clients.yaml")
	key, err := clients.Issue(keysFile, "acme", "paid")
	if err != nil {
		t.Fatal(err)
	}
	yaml := `version: 1
clients: { keys_file: "` + keysFile + `" }
tiers:
  paid: { rate_limits: [100/1m] }
upstreams:
  api: { url: "` + up.URL + `" }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: api, client_auth: required }
`
	cfg, _, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
	if err != nil {
		t.Fatal(err)
	}
	metrics, hub := observe.NewMetrics("t"), observe.NewHub()
	obs := &requestCounter{Observer: observe.NewFanout(metrics, hub)}
	srv := proxy.New(zerolog.Nop(), obs)
	if err := srv.Load(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	sub := hub.Subscribe(16)
	defer sub.Close()

	for _, k := range []string{key, ""} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/x", nil)
		if k != "" {
			req.Header.Set("Authorization", "Bearer "+k)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if !srv.SetUpstreamMode("api", health.ModeCacheOnly) {
		t.Fatal("no upstream api")
	}

	if n := obs.n.Load(); n != 2 {
		t.Errorf("the decorator saw %d requests, want 2", n)
	}
	for _, labels := range []map[string]string{
		{"route": "api", "tier": "paid", "result": "admitted"},
		{"route": "api", "tier": "none", "result": "unauthorized"},
	} {
		if got := testkit.SumMetric(t, metrics.Registry, "breakwater_tier_requests_total", labels); got != 1 {
			t.Errorf("breakwater_tier_requests_total%v = %v, want 1", labels, got)
		}
	}
	select {
	case m := <-sub.C:
		if m.Type != "upstream_mode" {
			t.Errorf("event %s %s, want upstream_mode", m.Type, m.JSON)
		}
	case <-time.After(5 * time.Second):
		t.Error("no upstream_mode event within 5s of the mode change")
	}
}
