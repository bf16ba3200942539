package proxy

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// Two replicas (two Servers) with one real redis-server between them.

// A replica that never saw a URL answers it stale from the store when the
// upstream is down; the entry was on the store before the first replica's
// client had its whole answer.
func TestSharedCacheStaleFromAnotherReplica(t *testing.T) {
	rds := testkit.StartRedis(t)
	var down atomic.Bool
	var hits atomic.Int64
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if down.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"v":1}`)
	})
	yaml := `
store:
  redis: { url: {{REDIS}}, timeout: 250ms }
  replicas: 2
upstreams:
  api: { url: {{UP}} }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
    retry: off
    cache: { ttl: 200ms, stale_if_error: 1h, shared: true }
`
	vars := map[string]string{"REDIS": rds.URL, "UP": up.URL}
	a, b := startProxy(t, yaml, vars), startProxy(t, yaml, vars)
	resp, body := fleetGet(t, a.URL+"/doc")
	if resp.StatusCode != 200 || string(body) != `{"v":1}` {
		t.Fatalf("first answer %d %s", resp.StatusCode, body)
	}
	// Fresh on the other replica without going upstream.
	resp, _ = fleetGet(t, b.URL+"/doc")
	if resp.Header.Get("X-Breakwater-Cache") != "hit" || hits.Load() != 1 {
		t.Fatalf("replica b: cache %q after %d upstream hits, want a hit from the store", resp.Header.Get("X-Breakwater-Cache"), hits.Load())
	}
	down.Store(true)
	time.Sleep(300 * time.Millisecond) // past ttl: stale now
	c := startProxy(t, yaml, vars)     // a third replica that never saw /doc
	resp, body = fleetGet(t, c.URL+"/doc")
	if resp.StatusCode != 200 || string(body) != `{"v":1}` || resp.Header.Get("X-Breakwater-Cache") != "stale" {
		t.Fatalf("new replica, upstream down: %d %q %s, want the stale entry from the store", resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), body)
	}
}

// A shared rate limit is one bucket for every replica, and the RateLimit
// headers report it.
func TestSharedRateLimit(t *testing.T) {
	rds := testkit.StartRedis(t)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	yaml := `
store:
  redis: { url: {{REDIS}}, timeout: 250ms }
  replicas: 2
upstreams:
  api: { url: {{UP}} }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
    rate_limit: { rate: 3/1m, key: header:X-User, shared: true }
`
	vars := map[string]string{"REDIS": rds.URL, "UP": up.URL}
	a, b := startProxy(t, yaml, vars), startProxy(t, yaml, vars)
	want := []struct {
		url    string
		status int
		left   string
	}{{a.URL, 200, `"api";r=2;t=20`}, {b.URL, 200, `"api";r=1;t=40`}, {a.URL, 200, `"api";r=0;t=20`}, {b.URL, 429, `"api";r=0;t=20`}}
	for i, w := range want {
		req, _ := http.NewRequest("GET", w.url+"/x", nil)
		req.Header.Set("X-User", "alice")
		resp, _ := do(t, http.DefaultClient, req)
		if resp.StatusCode != w.status {
			t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, w.status)
		}
		if got := resp.Header.Get("RateLimit"); got == "" || got[:len(`"api";r=N`)] != w.left[:len(`"api";r=N`)] {
			t.Fatalf("request %d: RateLimit %q, want remaining as in %q", i, got, w.left)
		}
	}
}

// fleetGet sends a GET with the Host every replica sees in a sidecar fleet (the
// test replicas listen on different ports; the key leaves the Host out
// anyway unless the upstream receives it).
func fleetGet(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = "localhost:8080"
	return do(t, http.DefaultClient, req)
}
