package policy

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// retrySpec is a route's retry block, parsed for the hot path.
type retrySpec struct {
	attempts   int
	on         conditions
	methods    map[string]bool
	initial    time.Duration
	maxDelay   time.Duration
	multiplier float64
	jitter     float64
	raHonor    bool
	raMax      time.Duration
	maxBody    int64 // bodies up to this are buffered for replay (ReplayLimit)
	// tools: retry.tools is annotated, so a POST's body is buffered too:
	// the caller may vouch for it (Trace.Repeat).
	tools bool
}

func newRetrySpec(c *config.Retry) *retrySpec {
	s := &retrySpec{
		attempts: c.Attempts, on: parseConditions(c.On), methods: map[string]bool{},
		initial: c.Backoff.Initial.D(), maxDelay: c.Backoff.Max.D(),
		multiplier: c.Backoff.Multiplier, jitter: c.Backoff.Jitter,
		raHonor: c.RetryAfter.Honor, raMax: c.RetryAfter.Max.D(),
		maxBody: int64(c.MaxBody), tools: c.Tools == "annotated",
	}
	for _, m := range c.Methods {
		s.methods[m] = true
	}
	return s
}

// eligible reports whether a request may be sent again: its body can be
// replayed, and its method is listed, unless the caller decided for this
// request (t.Repeat: a tools/call, by its tool's annotations).
func (s *retrySpec) eligible(req *http.Request, t *Trace) bool {
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if t != nil && t.Repeat != RepeatByMethod {
		return replayable && t.Repeat == RepeatSafe
	}
	return replayable && s.methods[req.Method]
}

// traceOfResp is the Trace of the request a pipeline response answers.
func traceOfResp(resp *http.Response) *Trace {
	if rb, ok := resp.Body.(*respBody); ok {
		return rb.st.trace
	}
	return nil
}

// shouldRetry is the retry policy's failure predicate.
func (s *retrySpec) shouldRetry(resp *http.Response, err error) bool {
	if err != nil {
		var ae *attemptError
		if !errors.As(err, &ae) {
			return false // a rejection (breaker, quota, timeout, cancellation) is returned as it is
		}
		switch ae.kind {
		case kindConnect:
			// A refused connection sent nothing: any method may go again,
			// provided its body still can.
			return s.on.connectError && (ae.unsent || s.eligible(ae.st.req, ae.st.trace))
		case kindTimeout:
			return s.on.timeout && s.eligible(ae.st.req, ae.st.trace) && ae.st.ctx.Err() == nil
		case kindError:
			return s.on.connectError && s.eligible(ae.st.req, ae.st.trace)
		}
		return false
	}
	return resp != nil && s.on.status(resp.StatusCode) && s.eligible(resp.Request, traceOfResp(resp))
}

// retryAfter returns the capped wait an upstream asked for, if honoured.
func (s *retrySpec) retryAfter(resp *http.Response) (time.Duration, bool) {
	if !s.raHonor || resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	ra, ok := ratelimit.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if !ok {
		return 0, false
	}
	return min(ra, s.raMax), true
}

// backoff is the exponential delay before retry n (1-based), without jitter.
func (s *retrySpec) backoff(n int) time.Duration {
	d := float64(s.initial) * math.Pow(s.multiplier, float64(n-1))
	return time.Duration(min(d, float64(s.maxDelay)))
}

// delay is the wait before the next attempt. A Retry-After wait is not
// jittered (the upstream asked for exactly that); a backoff is. failsafe's
// own jitter is not configured: it would jitter Retry-After too.
func (s *retrySpec) delay(e failsafe.ExecutionAttempt[*http.Response]) time.Duration {
	if ra, ok := s.retryAfter(e.LastResult()); ok {
		return ra
	}
	d := s.backoff(e.Attempts())
	if s.jitter > 0 {
		d = time.Duration(float64(d) * (1 + s.jitter*(2*rand.Float64()-1)))
	}
	return d
}

// abort ends the retry loop on a failure whose wait cannot fit in the
// route's remaining time: the upstream's answer is passed through at once
// rather than after a wait that ends in a timeout. The wait is the capped
// Retry-After, or the shortest the next backoff can be (it grows with each
// attempt, so a check against the first backoff alone would let a later,
// longer one run into the timeout and answer 504 instead).
func (s *retrySpec) abort(resp *http.Response, err error) bool {
	var st *reqState
	var wait time.Duration
	if resp != nil {
		rb, ok := resp.Body.(*respBody)
		if !ok {
			return false
		}
		st = rb.st
		if ra, ok := s.retryAfter(resp); ok {
			wait = ra
		}
	} else {
		var ae *attemptError
		if !errors.As(err, &ae) {
			return true // a rejection (breaker, quota, bulkhead, cancellation) is never retried
		}
		st = ae.st
	}
	if wait == 0 {
		wait = time.Duration(float64(s.backoff(int(st.attempts.Load()))) * (1 - s.jitter))
	}
	return time.Until(st.dctx.deadline) < wait
}

// buildRetry is the route's retry policy. The budget is not given to
// WithBudget, and retries are not counted in OnRetry: both happen in
// Pipeline.spendBudget, when the retry's attempt starts (budget.go).
func (p *Pipeline) buildRetry() failsafe.Policy[*http.Response] {
	s := p.retry
	return retrypolicy.NewBuilder[*http.Response]().
		WithMaxAttempts(s.attempts).
		HandleIf(s.shouldRetry).
		AbortIf(s.abort).
		ReturnLastFailure().
		WithDelayFunc(s.delay).
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[*http.Response]) {
			// Free the connection now rather than after the wait; the
			// response stays whole in case the budget refuses the retry.
			if r := e.LastResult(); r != nil {
				if rb, ok := r.Body.(*respBody); ok {
					rb.park()
				}
			}
		}).
		Build()
}

func retryReason(resp *http.Response, err error) string {
	if resp != nil {
		return strconv.Itoa(resp.StatusCode)
	}
	var ae *attemptError
	if errors.As(err, &ae) {
		return ae.kind
	}
	return kindError
}

// buildHedge is the route's hedge policy; like a retry, a hedge asks the
// budget when its attempt starts (Pipeline.spendBudget).
func (p *Pipeline) buildHedge(h *config.Hedge) failsafe.Policy[*http.Response] {
	good := func(resp *http.Response, err error) bool {
		if err != nil || resp == nil {
			return false
		}
		if p.retry != nil {
			return !p.retry.on.status(resp.StatusCode)
		}
		return resp.StatusCode < 500
	}
	return hedgepolicy.NewBuilderWithDelay[*http.Response](h.Delay.D()).
		WithMaxHedges(h.Max).
		CancelIf(good).
		Build()
}
