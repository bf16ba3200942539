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
// the in-process one; a store shared by replicas can stand in for it.
type Quota interface {
	// Wait blocks until a token is granted, and reports how long it
	// waited. It never waits past ctx's deadline: when no token can come
	// in time, it fails at once with *ratelimit.ExhaustedError (nothing
	// spent). If ctx ends while waiting it returns ctx.Err().
	Wait(ctx context.Context) (waited time.Duration, err error)
	// Refund gives back a token Wait granted for an attempt never sent.
	Refund()
	// Pause holds every token back for d (the upstream's own Retry-After),
	// as capped by the quota's settings, and returns the pause now in
	// force; 0 means nothing is paused.
	Pause(d time.Duration) time.Duration
}

// PriorityQuota is a Quota whose waiters are served by priority, then
// arrival (prio: a Priority, higher first). The pipeline uses WaitPriority
// when its Quota has it, and Wait otherwise.
type PriorityQuota interface {
	Quota
	WaitPriority(ctx context.Context, prio int) (waited time.Duration, err error)
}

var _ PriorityQuota = (*ratelimit.Quota)(nil)

// waitQuota spends the attempt's quota token.
func (p *Pipeline) waitQuota(st *reqState) (time.Duration, error) {
	var waited time.Duration
	var err error
	if pq := p.pquota; pq != nil {
		var prio Priority
		if st.trace != nil {
			prio = st.trace.Priority
		}
		waited, err = pq.WaitPriority(st.ctx, int(prio))
	} else {
		waited, err = p.quota.Wait(st.ctx)
	}
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
