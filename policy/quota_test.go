package policy_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// storeQuota stands in for a quota kept elsewhere (a store shared by
// replicas): it grants tokens while it has some, then refuses.
type storeQuota struct {
	tokens  atomic.Int64
	refunds atomic.Int64
	paused  atomic.Int64 // the last pause asked for, in ns
}

func (q *storeQuota) WaitPriority(context.Context, int) (time.Duration, error) {
	if q.tokens.Add(-1) < 0 {
		q.tokens.Add(1)
		return 0, &ratelimit.ExhaustedError{RetryAfter: 7 * time.Second}
	}
	return 0, nil
}

func (q *storeQuota) Refund() { q.refunds.Add(1); q.tokens.Add(1) }

func (q *storeQuota) Pause(d time.Duration) time.Duration { q.paused.Store(int64(d)); return d }

// Any policy.Quota serves the pipeline: tokens are spent per attempt,
// refunded for an attempt never sent, paused by the upstream's
// Retry-After, and exhaustion is ErrQuotaExhausted with its Retry-After.
func TestPipelineSpendsAnyQuota(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	cfg := parseConfig(t, testkit.OneRoute(u.URL, `
    retry: off
`))
	q := &storeQuota{}
	q.tokens.Store(1)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p := policy.NewPipeline(cfg.Routes[0], tr, policy.Parts{Quota: q}, nil, nil)
	client := &http.Client{Transport: p}

	resp, err := client.Get(u.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || time.Duration(q.paused.Load()) != 3*time.Second {
		t.Errorf("got %d and a pause of %v, want the upstream's 429 and a 3s pause", resp.StatusCode, time.Duration(q.paused.Load()))
	}
	_, err = client.Get(u.URL + "/")
	if !errors.Is(err, policy.ErrQuotaExhausted) || policy.RetryAfterOf(err) != 7*time.Second {
		t.Errorf("with no token left: %v, want ErrQuotaExhausted retrying after 7s", err)
	}
	if n := u.Hits.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}

	// A refused connection sent nothing: its token comes back.
	deadURL := testkit.DeadURL(t)
	dead := policy.NewPipeline(parseConfig(t, testkit.OneRoute(deadURL, `
    retry: off
`)).Routes[0], tr, policy.Parts{Quota: q}, nil, nil)
	q.tokens.Store(1)
	if _, err := (&http.Client{Transport: dead}).Get(deadURL + "/"); err == nil {
		t.Fatal("a dead upstream answered")
	}
	if n := q.refunds.Load(); n != 1 {
		t.Errorf("%d refunds after a refused connection, want 1", n)
	}
}
