package policy_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/transport"
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
		"lean": func() http.RoundTripper { return transport.NewH1(transport.Settings{MaxIdleConns: 8}) },
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

// A parked response (a retry was scheduled for it) that turns out to be
// the answer, because the budget refused the retry, reaches the caller
// whole: read ahead in the background, small or past drain.MaxBytes.
func TestParkedResponseRefusedARetryIsReturnedWhole(t *testing.T) {
	for _, size := range []int{1000, 200 << 10} {
		body := randomBody(uint64(size), size)
		for tname, newRT := range baseTransports() {
			t.Run(tname+"/"+strconv.Itoa(size), func(t *testing.T) {
				testkit.CheckLeaks(t)
				u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = w.Write(body)
				})
				base := newRT()
				defer base.(interface{ CloseIdleConnections() }).CloseIdleConnections()
				// ratio 0.01 and no minimum: every retry is refused.
				cfg := parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, on: [503], backoff: { initial: 1ms }, budget: { ratio: 0.01, min_concurrent: 0 } }
`))
				obs := newCounter()
				p := policy.NewPipeline(cfg.Routes[0], base, policy.Parts{}, obs, traceFrom)
				resp, err := (&http.Client{Transport: p}).Get(u.URL + "/")
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 503 || sum(got) != sum(body) {
					t.Errorf("got %d, %d bytes (%v), want the 503 with its %d bytes", resp.StatusCode, len(got), err, len(body))
				}
				if obs.budget != 1 || u.Hits.Load() != 1 {
					t.Errorf("budget refusals %d, upstream requests %d; want 1 and 1", obs.budget, u.Hits.Load())
				}
			})
		}
	}
}
