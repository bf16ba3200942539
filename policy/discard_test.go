package policy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/upstream"
)

// stallingUpstream answers its first request with a 503 that promises
// 100 bytes of body, sends 5 and then stalls until the connection goes;
// every other request with a quick 200 "ok".
func stallingUpstream(t *testing.T) *testkit.Upstream {
	return testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "stall")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
}

// baseTransports are the two transports an attempt may go through.
func baseTransports() map[string]func() http.RoundTripper {
	return map[string]func() http.RoundTripper{
		"net/http": func() http.RoundTripper {
			return &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 8}
		},
		"lean": func() http.RoundTripper { return upstream.NewH1(upstream.Settings{MaxIdleConns: 8}) },
	}
}

// SPEC Part 3, "Every step under the route's clock": the body of a failed
// attempt that stalls neither holds back the retry nor the winning hedge
// (issue 19, defect 5). Before: 504 after the whole route timeout, with
// one attempt, though the next attempt answers in a few ms.
func TestStalledDiscardedBodyDelaysNeitherRetryNorHedge(t *testing.T) {
	routes := map[string]string{
		"retry": `
    timeout: 3s
    retry: { attempts: 3, on: [503], backoff: { initial: 1ms, jitter: 0 } }
`,
		"hedge": `
    timeout: 3s
    hedge: { delay: 20ms, max: 1 }
`,
		"hedge and retry": `
    timeout: 3s
    retry: { attempts: 3, on: [503], backoff: { initial: 1ms, jitter: 0 } }
    hedge: { delay: 20ms, max: 1 }
`,
	}
	for tname, newRT := range baseTransports() {
		for rname, route := range routes {
			t.Run(tname+"/"+rname, func(t *testing.T) {
				testkit.CheckLeaks(t)
				u := stallingUpstream(t)
				base := newRT()
				defer base.(interface{ CloseIdleConnections() }).CloseIdleConnections()
				cfg := parseConfig(t, testkit.OneRoute(u.URL, route))
				p := policy.NewPipeline(cfg.Routes[0], base, policy.Parts{}, nil, traceFrom)
				tr := &policy.Trace{}
				req, _ := http.NewRequestWithContext(withTrace(context.Background(), tr), http.MethodGet, u.URL+"/", nil)
				start := time.Now()
				resp, err := p.RoundTrip(req)
				elapsed := time.Since(start)
				if err != nil {
					t.Fatalf("%v after %v, %d attempts; want the second attempt's 200", err, elapsed, tr.Attempts)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Logf("%s: %d %q after %v, %d attempts", rname, resp.StatusCode, b, elapsed.Round(time.Millisecond), tr.Attempts)
				if resp.StatusCode != 200 || string(b) != "ok" || tr.Attempts != 2 {
					t.Errorf("got %d %q in %d attempts, want 200 \"ok\" in 2", resp.StatusCode, b, tr.Attempts)
				}
				// The stall lasts the route's 3s; the answer is a few ms away.
				if elapsed > time.Second {
					t.Errorf("answered after %v: the stalled body was waited for", elapsed)
				}
				// The stalled connection is closed within the drain bound.
				testkit.WaitFor(t, 2*time.Second, "the stalled connection to close", func() bool { return u.ClosedConns.Load() >= 1 })
			})
		}
	}
}
