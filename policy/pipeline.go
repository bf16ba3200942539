package policy

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Parts are the stateful pieces a pipeline uses. They outlive a reload
// when their settings do not change, so the caller keeps them (see
// Registry) and hands them in; nil means the policy is off.
type Parts struct {
	Breaker  *Breaker
	Bulkhead *Bulkhead
	Quota    *ratelimit.Quota
}

// Pipeline is one route's resilience policies around an upstream's
// transport. It is an http.RoundTripper, safe for concurrent use; it never
// buffers a body beyond what the proxy made replayable (GetBody).
type Pipeline struct {
	route, upstream string
	base            http.RoundTripper
	obs             Observer

	timeout time.Duration // total, until response headers
	idle    time.Duration // stream_idle_timeout; 0 = none
	perTry  time.Duration

	breaker  *Breaker
	bulkhead *Bulkhead
	quota    *ratelimit.Quota
	retry    *retrySpec
	budget   *attemptBudget // nil without retry

	plain  failsafe.Executor[*http.Response] // retry only; nil = single attempt
	hedged failsafe.Executor[*http.Response] // retry and hedge, for GET/HEAD; nil = no hedging
}

// NewPipeline builds a route's pipeline. r must come from a validated
// config; base is the upstream's transport.
func NewPipeline(r *config.Route, base http.RoundTripper, parts Parts, obs Observer) *Pipeline {
	if obs == nil {
		obs = NopObserver{}
	}
	e := r.Effective
	p := &Pipeline{
		route: r.Name, upstream: r.Upstream, base: base, obs: obs,
		timeout: e.Timeout.D(), idle: e.StreamIdleTimeout.D(),
		breaker: parts.Breaker, bulkhead: parts.Bulkhead, quota: parts.Quota,
	}
	if e.Retry != nil {
		p.retry = newRetrySpec(e.Retry)
		p.perTry = e.Retry.PerTryTimeout.D()
		p.budget = newAttemptBudget(e.Retry.Budget.Ratio, e.Retry.Budget.MinConcurrent, func() { obs.BudgetExhausted(r.Name) })
	}
	var policies []failsafe.Policy[*http.Response]
	if p.retry != nil && p.retry.attempts > 1 {
		policies = append(policies, p.buildRetry(p.budget))
		p.plain = failsafe.With(policies...)
	}
	if e.Hedge != nil {
		p.hedged = failsafe.With(append(policies, p.buildHedge(e.Hedge, p.budget))...)
	}
	return p
}

// RoundTrip sends req through the route's policies. The returned body
// holds the bulkhead slot and the request's context until it is closed.
func (p *Pipeline) RoundTrip(req *http.Request) (*http.Response, error) {
	st := &reqState{p: p, req: req, trace: traceFrom(req.Context())}
	// The total timeout bounds everything up to response headers; after
	// that a stream is bounded by stream_idle_timeout instead (SPEC.md,
	// Streaming), so it is a timer we stop rather than a context deadline,
	// and the same timer then serves as the idle timer (st.expire).
	var ctx context.Context
	ctx, st.cancel = context.WithCancelCause(req.Context())
	st.dctx = deadlineCtx{Context: ctx, deadline: time.Now().Add(p.timeout)}
	st.ctx = &st.dctx
	timer := time.AfterFunc(p.timeout, st.expire)

	if b := p.bulkhead; b != nil {
		if err := b.acquire(st.ctx); err != nil {
			timer.Stop()
			st.cancel(nil)
			if errors.Is(err, ErrBulkheadFull) {
				p.obs.BulkheadRejected(p.route)
			} else {
				err = st.ctxError()
			}
			return nil, err
		}
		st.slot = true
		p.obs.BulkheadInFlight(p.route, b.InFlight())
	}

	resp, err := p.execute(st)
	if !timer.Stop() && err == nil {
		// The timeout fired as the headers arrived: its cancel has already
		// doomed the body, so report the timeout rather than a torn body.
		st.discardAll(nil)
		resp, err = nil, &RejectedError{Err: ErrTimeout}
	}
	if st.trace != nil {
		st.trace.Attempts = int(st.attempts.Load())
	}
	if err != nil {
		st.finish()
		return nil, err
	}
	rb := resp.Body.(*respBody)
	rb.final = true
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy needs the upgraded connection as a ReadWriteCloser;
		// a WebSocket has no idle timeout of ours.
		if _, ok := rb.rc.(interface{ Write([]byte) (int, error) }); ok {
			resp.Body = &upgradedBody{rb}
		}
	} else if p.idle > 0 {
		st.streaming.Store(true)
		rb.idle, rb.idleTimer = p.idle, timer
	}
	return resp, nil
}

// expire is the request's one timer: the route timeout until response
// headers, then the stream idle timeout.
func (st *reqState) expire() {
	if st.streaming.Load() {
		st.cancel(errStreamIdle)
	} else {
		st.cancel(ErrTimeout)
	}
}

// finish ends the request: its bulkhead slot and its context. It runs
// once, when the request fails or its body is closed.
func (st *reqState) finish() {
	if st.slot {
		b := st.p.bulkhead
		b.release()
		st.p.obs.BulkheadInFlight(st.p.route, b.InFlight())
	}
	st.cancel(nil)
}

var errStreamIdle = errors.New("stream idle timeout")

// execute runs the attempts: once, or through failsafe's retry (and hedge).
func (p *Pipeline) execute(st *reqState) (*http.Response, error) {
	var resp *http.Response
	var err error
	if p.hedged != nil && (st.req.Method == http.MethodGet || st.req.Method == http.MethodHead) &&
		st.replayable() && st.req.Header.Get("Upgrade") == "" {
		st.hedging = true
		resp, err = p.hedged.WithContext(st.ctx).GetWithExecution(func(e failsafe.Execution[*http.Response]) (*http.Response, error) {
			return p.attempt(st, e)
		})
	} else {
		// The first attempt runs before failsafe is involved: most succeed,
		// and the executor costs a dozen allocations per request. Only a
		// failure worth retrying starts it, with that attempt handed over
		// as its first.
		resp, err = p.attempt(st, nil)
		if p.plain == nil || !p.retry.shouldRetry(resp, err) {
			return resp, st.finalError(err)
		}
		first, firstErr := resp, err
		handed := false
		resp, err = p.plain.WithContext(st.ctx).GetWithExecution(func(e failsafe.Execution[*http.Response]) (*http.Response, error) {
			if !handed {
				handed = true
				return first, firstErr
			}
			return p.attempt(st, e)
		})
	}
	if errors.Is(err, budget.ErrExceeded) {
		// The budget refused a retry: the failure is returned as it came.
		resp, err = st.lastResult()
	}
	if resp != nil && err != nil {
		resp = nil
	}
	st.discardAll(resp)
	return resp, st.finalError(err)
}

// attempt sends one request upstream: breaker → quota → per-try timeout →
// transport. e is nil outside an executor.
func (p *Pipeline) attempt(st *reqState, e failsafe.Execution[*http.Response]) (*http.Response, error) {
	if st.ctx.Err() != nil {
		return nil, st.ctxError()
	}
	b := p.breaker
	if b != nil {
		// Checked before the quota wait: an open breaker neither queues
		// callers nor spends tokens.
		if rem, open := b.openFor(); open {
			st.setBreaker(Open)
			return nil, &RejectedError{Err: ErrCircuitOpen, RetryAfter: rem}
		}
	}
	if q := p.quota; q != nil {
		waited, err := q.Wait(st.ctx)
		if err == nil {
			// Every granted attempt is a sample, an immediate grant a zero:
			// the histogram then says which share of attempts waited.
			p.obs.QuotaWaited(p.upstream, waited)
		}
		if err != nil {
			var ex *ratelimit.ExhaustedError
			if errors.As(err, &ex) {
				p.obs.QuotaExhausted(p.upstream, p.route, ex.RetryAfter)
				return nil, &RejectedError{Err: ErrQuotaExhausted, RetryAfter: ex.RetryAfter}
			}
			return nil, st.ctxError()
		}
	}
	probe := false
	if b != nil {
		var ok bool
		if probe, ok = b.acquire(); !ok {
			if p.quota != nil {
				p.quota.Refund()
			}
			rem, _ := b.openFor()
			st.setBreaker(Open)
			return nil, &RejectedError{Err: ErrCircuitOpen, RetryAfter: max(rem, time.Second)}
		}
		if probe {
			st.setBreaker(HalfOpen)
		} else {
			st.setBreaker(Closed)
		}
	}

	// An attempt has a context of its own only when something may end it
	// alone: per_try_timeout, or losing to a hedge. Otherwise the
	// request's context serves, and saves a context per attempt.
	var actx context.Context = st.ctx
	cancel := context.CancelFunc(noop)
	perTry := p.perTry
	if dl, ok := st.ctx.Deadline(); ok && perTry > 0 && time.Until(dl) <= perTry {
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
	st.attempts.Add(1)
	if p.budget != nil {
		p.budget.attempts.Add(1)
	}
	start := time.Now()
	resp, err := p.base.RoundTrip(out)
	if p.budget != nil {
		p.budget.attempts.Add(-1)
	}
	if timer != nil && !timer.Stop() {
		if resp != nil {
			drainClose(resp.Body)
		}
		resp, err = nil, ErrAttemptTimeout
	}
	elapsed := time.Since(start)
	if err != nil {
		cancel()
		ae := st.attemptError(err, rb.timedOut.Load(), rb.abandoned.Load())
		if b != nil {
			b.record(p.breakerVerdict(ae), probe)
		}
		if ae.unsent && p.quota != nil {
			p.quota.Refund() // spent only by attempts actually sent
		}
		p.obs.Attempt(p.route, p.upstream, ae.kind, elapsed)
		st.setLast(nil, ae)
		return nil, ae
	}
	rb.rc = resp.Body
	resp.Body = rb
	rb.hasResp.Store(true)
	if b != nil {
		v := success
		if b.on.status(resp.StatusCode) {
			v = failure
		}
		b.record(v, probe)
	}
	p.obs.Attempt(p.route, p.upstream, statusClass(resp.StatusCode), elapsed)
	if q := p.quota; q != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if ra, ok := ratelimit.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && ra > 0 {
			// Report the pause in force (capped by max_pause; none when
			// honor_retry_after is off), not the raw Retry-After.
			if paused := q.Pause(ra); paused > 0 {
				p.obs.QuotaPaused(p.upstream, paused)
			}
		}
	}
	st.register(rb, resp)
	return resp, nil
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

// reqState is one request's passage through the pipeline.
type reqState struct {
	p      *Pipeline
	ctx    context.Context // &dctx
	dctx   deadlineCtx
	cancel context.CancelCauseFunc
	req    *http.Request
	trace  *Trace

	slot      bool        // holds a bulkhead slot, released by finish
	hedging   bool        // attempts run under the hedge executor
	streaming atomic.Bool // headers are out: the timer is the idle timer
	attempts  atomic.Int32
	bodyTaken atomic.Bool // the original body went to an attempt
	once      *onceBody   // a non-replayable body, shared by attempts
	mu        sync.Mutex  // guards what follows (hedges run concurrently)
	bodies    []*respBody // responses received, for discardAll
	bodyBuf   [2]*respBody
	first     respBody    // the first attempt's, saving an allocation
	firstUsed atomic.Bool // first is taken (hedges race for it)
	done      bool        // discardAll ran: late hedges discard themselves
	lastResp  *http.Response
	lastErr   error
	breaker   State
}

func noop() {}

func (st *reqState) newBody() *respBody {
	if st.firstUsed.CompareAndSwap(false, true) {
		st.first.st = st
		return &st.first
	}
	return &respBody{st: st}
}

// deadlineCtx reports the route's deadline (for dials, quota waits and
// Retry-After decisions) while its cancellation stays under our control.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// ctxError is the error for a context that ended: the route's timeout, or
// the client going away.
func (st *reqState) ctxError() error {
	if errors.Is(context.Cause(st.ctx), ErrTimeout) && st.req.Context().Err() == nil {
		return &RejectedError{Err: ErrTimeout}
	}
	return context.Canceled
}

func (st *reqState) replayable() bool {
	b := st.req.Body
	return b == nil || b == http.NoBody || st.req.GetBody != nil
}

// bodyForAttempt gives each attempt its own copy of a replayable body.
// A body too large to buffer goes to the first attempt through onceBody,
// which notes whether any of it was read: if not (a refused connection),
// it can still go to the next attempt.
func (st *reqState) bodyForAttempt() (body readCloser) {
	r := st.req
	if r.Body == nil || r.Body == http.NoBody {
		return r.Body
	}
	if r.GetBody != nil {
		if st.bodyTaken.CompareAndSwap(false, true) {
			return r.Body
		}
		b, err := r.GetBody()
		if err != nil {
			return errBody{err}
		}
		return b
	}
	if st.once == nil {
		st.once = &onceBody{rc: r.Body}
	}
	return st.once
}

func (st *reqState) setBreaker(s State) {
	if st.trace != nil {
		st.mu.Lock()
		st.breaker = s
		st.trace.Breaker = string(s)
		st.mu.Unlock()
	}
}

func (st *reqState) setLast(resp *http.Response, err error) {
	st.mu.Lock()
	st.lastResp, st.lastErr = resp, err
	st.mu.Unlock()
}

func (st *reqState) lastResult() (*http.Response, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.lastResp, st.lastErr
}

// register remembers a response so that, whatever wins, every other one
// is drained and closed.
func (st *reqState) register(rb *respBody, resp *http.Response) {
	st.mu.Lock()
	if st.done {
		st.mu.Unlock()
		rb.discard()
		return
	}
	if st.bodies == nil {
		st.bodies = st.bodyBuf[:0]
	}
	st.bodies = append(st.bodies, rb)
	st.lastResp, st.lastErr = resp, nil
	st.mu.Unlock()
}

// discardAll drains and closes every response but the winner's.
func (st *reqState) discardAll(winner *http.Response) {
	st.mu.Lock()
	st.done = true
	bodies := st.bodies
	st.bodies = nil
	st.mu.Unlock()
	for _, rb := range bodies {
		if winner != nil && winner.Body == rb {
			if rb.hedge {
				st.p.obs.Hedge(st.p.route, "won")
			}
			continue
		}
		if rb.hedge {
			st.p.obs.Hedge(st.p.route, "lost")
		}
		rb.discard()
	}
}
