package admin_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// /routes and /health show who waits: per route, per upstream's
// concurrency, and for a quota token (kept by the quota, and dropped from
// /health before issue 15).
func TestRoutesShowWaitingCounts(t *testing.T) {
	e := newEnv(t, `
upstreams:
  app:
    url: "{{UP}}"
    quota: { rate: 1/20s, burst: 1, max_wait: 30s }
    concurrency: { max_concurrent: 4, max_queue: 10, max_wait: 5s }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: app
    timeout: 30s
    bulkhead: { max_concurrent: 2, max_queue: 3, max_wait: 1s }
`)
	if resp, _ := e.get("/first"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	// The next one waits 20s for the quota's next token; it is
	// cancelled when the test ends.
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.data.URL+"/second", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	var body struct {
		Routes []struct {
			Name            string `json:"name"`
			BulkheadWaiting *int   `json:"bulkhead_waiting"`
			BulkheadInUse   int    `json:"bulkhead_in_flight"`
		} `json:"routes"`
		Upstreams []struct {
			Name        string `json:"name"`
			Concurrency *struct {
				InFlight int `json:"in_flight"`
				Max      int `json:"max"`
				Waiting  int `json:"waiting"`
			} `json:"concurrency"`
			QuotaWaiting int `json:"quota_waiting"`
		} `json:"upstreams"`
	}
	testkit.WaitFor(t, 10*time.Second, "the quota waiter in /routes", func() bool {
		code, b := e.call(http.MethodGet, "/routes", "")
		if code != http.StatusOK || json.Unmarshal(b, &body) != nil {
			return false
		}
		return len(body.Upstreams) == 1 && body.Upstreams[0].QuotaWaiting == 1
	})
	u := body.Upstreams[0]
	if u.Name != "app" || u.Concurrency == nil || u.Concurrency.Max != 4 || u.Concurrency.InFlight != 1 || u.Concurrency.Waiting != 0 {
		t.Errorf("upstream queues = %+v (concurrency %+v), want app with concurrency 1 of 4 in flight, none waiting", u, u.Concurrency)
	}
	if r := body.Routes[0]; r.BulkheadWaiting == nil || *r.BulkheadWaiting != 0 || r.BulkheadInUse != 1 {
		t.Errorf("route = %+v, want bulkhead_waiting 0 (present) and one in flight", r)
	}
	_, b := e.call(http.MethodGet, "/health", "")
	var health struct {
		Upstreams []struct {
			Quota struct {
				Waiting *int `json:"waiting"`
			} `json:"quota"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(b, &health); err != nil || len(health.Upstreams) != 1 || health.Upstreams[0].Quota.Waiting == nil || *health.Upstreams[0].Quota.Waiting != 1 {
		t.Errorf("/health: %s; want quota.waiting 1", b)
	}
}
