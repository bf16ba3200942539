package policy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
)

// getTraced sends a GET carrying t through the rig.
func (rg *rig) getTraced(t *testing.T, url string, tr *policy.Trace) (int, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(withTrace(context.Background(), tr), http.MethodGet, url, nil)
	resp, err := rg.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Issue 11: one clock for the route timeout. A caller that already spent
// part of the request's time (a coalesced cache wait) hands the pipeline
// the deadline it must keep, instead of a fresh timeout.
func TestTraceDeadlineEndsTheRouteTimeout(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 10s
    retry: { attempts: 3, on: [timeout, 503] }
`)), u)

	t.Run("passed", func(t *testing.T) {
		tr := &policy.Trace{Deadline: time.Now().Add(-time.Millisecond)}
		start := time.Now()
		_, err := rg.getTraced(t, u.URL+"/", tr)
		if !errors.Is(err, policy.ErrTimeout) {
			t.Errorf("got %v, want policy.ErrTimeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v, want at once", d)
		}
		if n := u.Hits.Load(); n != 0 || tr.Attempts != 0 || rg.obs.totalAttempts() != 0 {
			t.Errorf("upstream saw %d requests, trace %d attempts, observer %d: a passed deadline sends nothing",
				n, tr.Attempts, rg.obs.totalAttempts())
		}
	})

	t.Run("ahead", func(t *testing.T) {
		tr := &policy.Trace{Deadline: time.Now().Add(300 * time.Millisecond)}
		start := time.Now()
		_, err := rg.getTraced(t, u.URL+"/", tr)
		elapsed := time.Since(start)
		if !errors.Is(err, policy.ErrTimeout) {
			t.Errorf("got %v, want policy.ErrTimeout", err)
		}
		// The route's own timeout is 10s: ending well before it means the
		// deadline, not a fresh timeout, was kept.
		if elapsed < 250*time.Millisecond || elapsed > 5*time.Second {
			t.Errorf("took %v, want the deadline's ~300ms", elapsed)
		}
		if tr.Attempts != 1 {
			t.Errorf("trace says %d attempts, want 1", tr.Attempts)
		}
	})
}

// The trace comes from the function the caller gave NewPipeline and is
// filled before RoundTrip returns.
func TestTraceCountsAttemptsRetriesAndBreaker(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, backoff: { initial: 1ms, max: 1ms } }
    circuit_breaker: { failure_threshold: 5, delay: 10s }
`)), u)
	tr := &policy.Trace{}
	if code, err := rg.getTraced(t, u.URL+"/", tr); err != nil || code != 200 {
		t.Fatalf("got %d %v, want 200 on the third attempt", code, err)
	}
	if tr.Attempts != 3 || tr.Retries != 2 || tr.Breaker != string(policy.Closed) {
		t.Errorf("trace %+v, want 3 attempts, 2 retries, breaker closed", *tr)
	}
}

// Hedges ask the retry budget too: with ratio 0.1 and min_concurrent 1,
// ten slow requests get one hedge between them, and the other nine are
// refused (and counted), not sent.
func TestHedgesAreCappedByTheBudget(t *testing.T) {
	testkit.CheckLeaks(t)
	release := make(chan struct{})
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    hedge: { delay: 20ms, max: 1 }
    retry: { attempts: 3, budget: { ratio: 0.1, min_concurrent: 1 } }
`)), u)
	const n = 10
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := rg.get(t, u.URL+"/")
			if err != nil {
				t.Error(err)
			}
			codes <- code
		}()
	}
	budgetRefusals := func() int {
		rg.obs.mu.Lock()
		defer rg.obs.mu.Unlock()
		return rg.obs.budget
	}
	testkit.WaitFor(t, 5*time.Second, "one hedge sent and nine refused", func() bool {
		return u.InFlight.Load() == n+1 && budgetRefusals() == n-1
	})
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("status %d, want 200", c)
		}
	}
	if m, sent := u.MaxInFlight.Load(), rg.obs.hedgesBy("sent"); m != n+1 || sent != 1 {
		t.Errorf("upstream saw %d requests at once and %d hedges were sent, want %d and 1", m, sent, n+1)
	}
}

// Issue 19, defect 18: a request that passes the pipeline twice (the
// resend after an upstream 401, auth.Transport) is traced with the
// attempts and retries of both passes; the second pass overwrote the first.
func TestTraceAddsUpPasses(t *testing.T) {
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 2, on: [503], backoff: { initial: 1ms, max: 1ms, jitter: 0 } }
`)), u)
	tr := &policy.Trace{}
	for range 2 {
		if st, err := rg.getTraced(t, u.URL+"/", tr); err != nil || st != 503 {
			t.Fatalf("%d %v, want 503", st, err)
		}
	}
	if u.Hits.Load() != 4 || tr.Attempts != 4 || tr.Retries != 2 {
		t.Errorf("upstream saw %d requests; trace says %d attempts, %d retries; want 4, 4, 2", u.Hits.Load(), tr.Attempts, tr.Retries)
	}
}
