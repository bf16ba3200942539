package policy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go"

	"github.com/breakwater-proxy/breakwater/internal/drain"
	"github.com/breakwater-proxy/breakwater/internal/ending"
)

// attempt sends one request upstream: budget (for a retry or hedge) →
// breaker → quota → per-try timeout → transport. e is nil outside an
// executor.
func (p *Pipeline) attempt(st *reqState, e failsafe.Execution[*http.Response]) (*http.Response, error) {
	if st.ctx.Err() != nil {
		return nil, st.ctxError()
	}
	held, err := p.spendBudget(st, e)
	if err != nil {
		return nil, err
	}
	if held {
		defer p.budget.release()
	}
	perm, err := p.admit(st)
	if err != nil {
		return nil, err
	}
	return p.send(st, e, perm)
}

// spendBudget lets a retry or a hedge go if the budget allows, and
// reports it; held says a budget permit is to be released when the
// attempt ends. The first attempt spends nothing.
func (p *Pipeline) spendBudget(st *reqState, e failsafe.Execution[*http.Response]) (held bool, err error) {
	if e == nil {
		return false, nil
	}
	hedge := e.IsHedge()
	if !hedge && e.Retries() == 0 {
		return false, nil // the first attempt, under the hedge executor
	}
	if p.budget != nil {
		if !p.budget.tryAcquire() {
			p.obs.BudgetExhausted(p.route)
			return false, errBudgetExceeded
		}
		held = true
	}
	if !hedge {
		// Counted here, once the budget has let the retry go, not when
		// it is scheduled: a refused retry is no retry.
		p.obs.Retry(p.route, retryReason(e.LastResult(), e.LastError()))
		st.retries.Add(1)
	}
	return held, nil
}

// admit asks the breaker and the upstream quota for an attempt.
func (p *Pipeline) admit(st *reqState) (permit, error) {
	b := p.breaker
	if b != nil {
		// Checked before the quota wait: an open breaker neither queues
		// callers nor spends tokens.
		if rem, open := b.openFor(); open {
			st.setBreaker(seenOpen)
			return permit{}, &RejectedError{Err: ErrCircuitOpen, RetryAfter: rem}
		}
	}
	var waited time.Duration
	if p.quota != nil {
		w, err := p.waitQuota(st)
		if err != nil {
			return permit{}, err
		}
		waited = w
	}
	if b == nil {
		return permit{waited: waited}, nil
	}
	perm, ok := b.acquire()
	if !ok {
		if p.quota != nil {
			p.quota.Refund()
		}
		rem, _ := b.openFor()
		st.setBreaker(seenOpen)
		return permit{}, &RejectedError{Err: ErrCircuitOpen, RetryAfter: max(rem, time.Second)}
	}
	perm.waited = waited
	if perm.probe {
		st.setBreaker(seenHalfOpen)
		perm.breaker = HalfOpen
	} else {
		st.setBreaker(seenClosed)
		perm.breaker = Closed
	}
	return perm, nil
}

// send sends one admitted attempt through the transport, under its own
// per-try timer and, while hedging, failsafe's cancellation.
func (p *Pipeline) send(st *reqState, e failsafe.Execution[*http.Response], perm permit) (*http.Response, error) {
	// An attempt has a context of its own only when something may end it
	// alone: per_try_timeout, or losing to a hedge. Otherwise the
	// request's context serves, and saves a context per attempt.
	var actx context.Context = st.ctx
	cancel := context.CancelFunc(noop)
	perTry := p.perTry
	if perTry > 0 && time.Until(st.dctx.deadline) <= perTry {
		perTry = 0 // the route's own timeout comes first: no timer needed
	}
	if perTry > 0 || st.hedging {
		actx, cancel = context.WithCancel(st.ctx)
	}
	rb := st.newBody()
	rb.cancel = cancel
	out := st.req.WithContext(actx)
	out.Body = st.bodyForAttempt()
	var timer *time.Timer
	if perTry > 0 {
		timer = time.AfterFunc(perTry, func() { rb.timedOut.Store(true); cancel() })
	}
	if e != nil && e.IsHedge() {
		p.obs.Hedge(p.route, "sent")
		rb.hedge = true
	}
	if st.hedging {
		// failsafe cancels an execution's context when a hedge wins or the
		// executor gives up; an attempt still waiting for headers then
		// stops. One that already has headers is left to discardAll: its
		// context must not end under a body that may yet be the answer.
		stop := context.AfterFunc(e.Context(), func() {
			if !rb.hasResp.Load() {
				rb.abandoned.Store(true)
				cancel()
			}
		})
		defer stop()
	}
	n := st.attempts.Add(1)
	if p.budget != nil {
		p.budget.attempts.Add(1)
	}
	var end func(int, string)
	if st.trace != nil && st.trace.Tracer != nil {
		out, end = st.trace.Tracer.StartAttempt(out, int(n), perm.breaker, perm.waited)
	}
	start := time.Now()
	resp, err := p.base.RoundTrip(out)
	if p.budget != nil {
		p.budget.attempts.Add(-1)
	}
	if timer != nil && !timer.Stop() {
		if resp != nil {
			drain.Discard(resp.Body)
		}
		resp, err = nil, ErrAttemptTimeout
	}
	elapsed := time.Since(start)
	if err != nil {
		ae := p.failed(st, rb, perm, err, elapsed)
		if end != nil {
			end(0, ae.kind)
		}
		return nil, ae
	}
	if end != nil {
		end(resp.StatusCode, "")
	}
	p.received(st, rb, perm, resp, elapsed)
	return resp, nil
}

// failed accounts for an attempt that got no response.
func (p *Pipeline) failed(st *reqState, rb *respBody, perm permit, err error, elapsed time.Duration) *attemptError {
	rb.cancel()
	ae := st.attemptError(err, rb.timedOut.Load(), rb.abandoned.Load())
	if b := p.breaker; b != nil {
		b.record(p.breakerVerdict(ae), perm)
	}
	if ae.unsent && p.quota != nil {
		p.quota.Refund() // spent only by attempts actually sent
	}
	p.obs.Attempt(p.route, p.upstream, ae.kind, elapsed)
	st.setLast(nil, ae)
	return ae
}

// received accounts for an attempt's response and takes charge of its body.
func (p *Pipeline) received(st *reqState, rb *respBody, perm permit, resp *http.Response, elapsed time.Duration) {
	rb.rc = resp.Body
	resp.Body = rb
	rb.hasResp.Store(true)
	if b := p.breaker; b != nil {
		v := success
		if b.on.status(resp.StatusCode) {
			v = failure
		}
		b.record(v, perm)
	}
	p.obs.Attempt(p.route, p.upstream, statusClass(resp.StatusCode), elapsed)
	if p.quota != nil {
		p.pauseQuota(resp)
	}
	st.register(rb, resp)
}

// breakerVerdict decides how an attempt error counts: client cancellation
// and our own rejections are nobody's failure.
func (p *Pipeline) breakerVerdict(ae *attemptError) verdict {
	on := p.breaker.on
	switch ae.kind {
	case kindCanceled:
		return neutral
	case kindTimeout:
		if on.timeout {
			return failure
		}
	case kindConnect, kindError:
		if on.connectError {
			return failure
		}
	}
	return success
}

func statusClass(code int) string {
	switch code / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	}
	return "5xx"
}

// Attempt error kinds, as reported to the Observer and the breaker.
const (
	kindConnect  = "connect_error" // the connection was never made: nothing was sent
	kindTimeout  = "timeout"       // per_try_timeout, or the route's timeout, during the attempt
	kindCanceled = "canceled"      // the client left (or a hedge lost)
	kindError    = "error"         // any other transport error (reset, EOF before headers…)
)

// attemptError is a failed attempt with what the retry decision needs;
// failsafe's predicates see only (response, error), so it travels inside
// the error.
type attemptError struct {
	err    error
	kind   string
	unsent bool // provably nothing was sent: safe to retry any method
	st     *reqState
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// attemptError classifies a failed attempt. timedOut: per_try_timeout
// fired; abandoned: we cancelled it ourselves because failsafe gave up on
// it (a hedge that lost) — like a client leaving, nobody's failure.
func (st *reqState) attemptError(err error, timedOut, abandoned bool) *attemptError {
	ae := &attemptError{err: err, st: st, kind: kindError}
	switch {
	case timedOut || errors.Is(err, ErrAttemptTimeout):
		ae.kind = kindTimeout
	case st.ctx.Err() != nil:
		if st.ending() == ending.Timeout {
			ae.kind = kindTimeout // the route ran out of time waiting on the upstream
		} else {
			ae.kind = kindCanceled
		}
	case abandoned:
		ae.kind = kindCanceled
	case isDialError(err):
		ae.kind = kindConnect
		ae.unsent = st.once == nil || !st.once.read.Load()
	}
	return ae
}

// isDialError reports errors that prove the request never left: the
// connection (or its TLS handshake) was not established.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var rhe tls.RecordHeaderError
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var cie x509.CertificateInvalidError
	return errors.As(err, &rhe) || errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &cie)
}
