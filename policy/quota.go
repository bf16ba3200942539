package policy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Quota is an upstream's own limit, as the pipeline uses it: one token per
// attempt sent, shared by every route to the upstream. *ratelimit.Quota is
// the one breakwater has, over a bucket here or on a store.
type Quota interface {
	// WaitPriority blocks until a token is granted, and reports how long
	// it waited; waiters are served by priority (prio: a Priority, higher
	// first), then arrival. It never waits past ctx's deadline: when no
	// token can come in time, it fails at once with
	// *ratelimit.ExhaustedError (nothing spent). If ctx ends while waiting
	// it returns ctx.Err().
	WaitPriority(ctx context.Context, prio int) (waited time.Duration, err error)
	// Refund gives back a token WaitPriority granted for an attempt never sent.
	Refund()
	// Pause holds every token back for d (the upstream's own Retry-After),
	// as capped by the quota's settings, and returns the pause now in
	// force; 0 means nothing is paused.
	Pause(d time.Duration) time.Duration
}

var _ Quota = (*ratelimit.Quota)(nil)

// waitQuota spends the attempt's quota token.
func (p *Pipeline) waitQuota(st *reqState) (time.Duration, error) {
	var prio Priority
	if st.trace != nil {
		prio = st.trace.Priority
	}
	waited, err := p.quota.WaitPriority(st.ctx, int(prio))
	if err == nil {
		// Every granted attempt is a sample, an immediate grant a zero:
		// the histogram then says which share of attempts waited.
		p.obs.QuotaWaited(p.upstream, waited)
		return waited, nil
	}
	var ex *ratelimit.ExhaustedError
	if errors.As(err, &ex) {
		p.obs.QuotaExhausted(p.upstream, p.route, ex.RetryAfter)
		return 0, &RejectedError{Err: ErrQuotaExhausted, RetryAfter: ex.RetryAfter}
	}
	return 0, st.ctxError()
}

// pauseQuota pauses the upstream when its answer says "slow down" (a 429
// or 503 with Retry-After).
func (p *Pipeline) pauseQuota(resp *http.Response) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return
	}
	if ra, ok := ratelimit.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && ra > 0 {
		// Report the pause in force (capped by max_pause; none when
		// honor_retry_after is off), not the raw Retry-After.
		if paused := p.quota.Pause(ra); paused > 0 {
			p.obs.QuotaPaused(p.upstream, paused)
		}
	}
}
