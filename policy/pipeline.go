package policy

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/ending"
)

// Parts are the stateful pieces a pipeline uses. They outlive a reload
// when their settings do not change, so the caller keeps them (see
// Registry) and hands them in; nil means the policy is off (for Quota, a
// nil interface: not a nil *ratelimit.Quota inside one).
type Parts struct {
	Breaker  *Breaker
	Bulkhead *Bulkhead
	// Concurrency is the upstream's one set of slots, shared by every
	// route to it; taken after the route's own Bulkhead.
	Concurrency *Bulkhead
	Quota       Quota
}

// Pipeline is one route's resilience policies around an upstream's
// transport. It is an http.RoundTripper, safe for concurrent use; it never
// buffers a body beyond what the proxy made replayable (GetBody).
type Pipeline struct {
	route, upstream string
	base            http.RoundTripper
	obs             Observer
	traceOf         func(context.Context) *Trace // nil: no trace

	timeout time.Duration // total, until response headers
	idle    time.Duration // stream_idle_timeout; 0 = none
	perTry  time.Duration

	breaker     *Breaker
	bulkhead    *Bulkhead
	concurrency *Bulkhead
	quota       Quota
	retry       *retrySpec
	budget      *attemptBudget // nil without retry

	plain  failsafe.Executor[*http.Response] // retry only; nil = single attempt
	hedged failsafe.Executor[*http.Response] // retry and hedge, for GET/HEAD; nil = no hedging
}

// NewPipeline builds a route's pipeline. r must come from a validated
// config; base is the upstream's transport; obs nil reports nothing.
// trace returns the Trace of the request whose context it is given (nil:
// none); it is called once per request, at the start of RoundTrip, and a
// nil trace function means no request has one.
func NewPipeline(r *config.Route, base http.RoundTripper, parts Parts, obs Observer, trace func(context.Context) *Trace) *Pipeline {
	if obs == nil {
		obs = NopObserver{}
	}
	e := r.Effective
	p := &Pipeline{
		route: r.Name, upstream: r.Upstream, base: base, obs: obs, traceOf: trace,
		timeout: e.Timeout.D(), idle: e.StreamIdleTimeout.D(),
		breaker: parts.Breaker, bulkhead: parts.Bulkhead, concurrency: parts.Concurrency, quota: parts.Quota,
	}
	if e.Retry != nil {
		p.retry = newRetrySpec(e.Retry)
		p.perTry = e.Retry.PerTryTimeout.D()
		p.budget = newAttemptBudget(e.Retry.Budget.Ratio, e.Retry.Budget.MinConcurrent)
	}
	// The composition (see the package comment), in failsafe's notation:
	// failsafe.With(retry, hedge)(attempt), leftmost outermost. The
	// budget is asked by attempt itself (budget.go).
	var policies []failsafe.Policy[*http.Response]
	if p.retry != nil && p.retry.attempts > 1 {
		policies = append(policies, p.buildRetry())
		p.plain = failsafe.With(policies...)
	}
	if e.Hedge != nil {
		p.hedged = failsafe.With(append(policies, p.buildHedge(e.Hedge))...)
	}
	return p
}

// ReplayLimit is how many bytes of a request body with this method the
// caller should buffer (and offer through GetBody) so that attempts can
// replay it: retry.max_body for a method in retry.methods, 0 (never
// buffer for replay) otherwise. A larger body is sent once, streamed.
// This pipeline decides retries; the caller asks it rather than reading
// the retry config itself.
func (p *Pipeline) ReplayLimit(method string) int64 {
	if p.retry == nil || (!p.retry.methods[method] && !(p.retry.tools && method == http.MethodPost)) {
		return 0
	}
	return p.retry.maxBody
}

// RoundTrip sends req through the route's policies. The returned body
// holds the bulkhead slot and the request's context until it is closed.
func (p *Pipeline) RoundTrip(req *http.Request) (*http.Response, error) {
	var trace *Trace
	if p.traceOf != nil {
		trace = p.traceOf(req.Context())
	}
	now := time.Now()
	deadline := now.Add(p.timeout)
	if trace != nil && !trace.Deadline.IsZero() {
		if deadline = trace.Deadline; !deadline.After(now) {
			return nil, &RejectedError{Err: ErrTimeout}
		}
	}
	st := &reqState{p: p, req: req, trace: trace}
	// The total timeout bounds everything up to response headers; after
	// that a stream is bounded by stream_idle_timeout instead (SPEC.md,
	// Streaming), so it is a timer we stop rather than a context deadline,
	// and the same timer then serves as the idle timer (st.expire).
	var ctx context.Context
	ctx, st.cancel = context.WithCancelCause(req.Context())
	st.dctx = deadlineCtx{Context: ctx, deadline: deadline}
	st.ctx = &st.dctx
	timer := time.AfterFunc(deadline.Sub(now), st.expire)

	if p.bulkhead != nil || p.concurrency != nil {
		if err := st.takeSlots(); err != nil {
			timer.Stop()
			st.cancel(errFinished)
			return nil, err
		}
	}

	resp, err := p.execute(st)
	if !timer.Stop() && err == nil {
		// The timeout fired as the headers arrived: its cancel has already
		// doomed the body, so report the timeout rather than a torn body.
		st.discardAll(nil)
		resp, err = nil, &RejectedError{Err: ErrTimeout}
	}
	st.fillTrace()
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

// takeSlots takes the route's bulkhead slot, then the upstream's
// concurrency slot (the route's own bulkhead applies within the
// upstream's), each waiting at the request's priority.
func (st *reqState) takeSlots() error {
	p := st.p
	var prio Priority
	if st.trace != nil {
		prio = st.trace.Priority
	}
	if b := p.bulkhead; b != nil {
		if err := b.acquire(st.ctx, prio); err != nil {
			return st.slotError(err)
		}
		st.slot = true
		p.obs.BulkheadInFlight(p.route, b.InFlight())
	}
	if c := p.concurrency; c != nil {
		if err := c.acquire(st.ctx, prio); err != nil {
			st.releaseSlots()
			return st.slotError(err)
		}
		st.upSlot = true
	}
	return nil
}

// slotError is what a failed slot acquisition returns.
func (st *reqState) slotError(err error) error {
	if errors.Is(err, ErrBulkheadFull) {
		st.p.obs.BulkheadRejected(st.p.route)
		return err
	}
	return st.ctxError()
}

// releaseSlots gives back the slots the request holds.
func (st *reqState) releaseSlots() {
	if st.upSlot {
		st.upSlot = false
		st.p.concurrency.release()
	}
	if st.slot {
		st.slot = false
		b := st.p.bulkhead
		b.release()
		st.p.obs.BulkheadInFlight(st.p.route, b.InFlight())
	}
}

// finish ends the request: its bulkhead slots and its context. It runs
// once, when the request fails or its body is closed. The context ends
// when the last discarded body is drained too (drain.MaxTime at most):
// the losing attempts live under it, and a drain cut short would close
// connections that could be used again.
func (st *reqState) finish() {
	st.releaseSlots()
	st.finished.Store(true)
	if st.drains.Load() == 0 {
		st.cancel(errFinished)
	}
}

// drained is called as a discarded body is closed.
func (st *reqState) drained() {
	if st.drains.Add(-1) == 0 && st.finished.Load() {
		st.cancel(errFinished)
	}
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
	if errors.Is(err, errBudgetExceeded) {
		// The budget refused a retry: the failure is returned as it came.
		resp, err = st.lastResult()
	}
	if resp != nil && err != nil {
		resp = nil
	}
	st.discardAll(resp)
	return resp, st.finalError(err)
}

// finalError is the error the pipeline returns for err. Once the request's
// context has ended, that is the reason, whatever the attempt or failsafe
// made of it: failsafe reports a context ended during an attempt or a
// backoff as context.Canceled, which the proxy would take for a client
// that left, though it was the route's timeout.
func (st *reqState) finalError(err error) error {
	if err == nil {
		return nil
	}
	if st.ctx.Err() != nil {
		return st.ctxError()
	}
	var ae *attemptError
	if errors.As(err, &ae) {
		if ae.kind == kindTimeout {
			return &RejectedError{Err: ErrAttemptTimeout}
		}
		if ae.kind == kindCanceled {
			return ae.st.ctxError()
		}
		return ae.err
	}
	return err
}

// reqState is one request's passage through the pipeline.
type reqState struct {
	p      *Pipeline
	ctx    context.Context // &dctx
	dctx   deadlineCtx
	cancel context.CancelCauseFunc
	req    *http.Request
	trace  *Trace // the caller's; nil = none

	slot      bool        // holds a bulkhead slot, released by finish
	upSlot    bool        // holds an upstream concurrency slot, released by finish
	hedging   bool        // attempts run under the hedge executor
	streaming atomic.Bool // headers are out: the timer is the idle timer
	attempts  atomic.Int32
	drains    atomic.Int32 // discarded bodies being drained (respBody.discard)
	finished  atomic.Bool  // finish ran; the last drain ends the context
	retries   atomic.Int32
	bodyTaken atomic.Bool // the original body went to an attempt
	once      *onceBody   // a non-replayable body, shared by attempts
	mu        sync.Mutex  // guards what follows (hedges run concurrently)
	bodies    []*respBody // responses received, for discardAll
	bodyBuf   [2]*respBody
	first     respBody    // the first attempt's, saving an allocation
	firstUsed atomic.Bool // first is taken (hedges race for it)
	done      bool        // discardAll ran: late hedges discard themselves
	breaker   seenBreaker
	lastResp  *http.Response
	lastErr   error
}

// seenBreaker is the breaker state an attempt saw, in a byte rather than a
// State (a string): reqState is allocated per request, and the byte fits
// in padding.
type seenBreaker uint8

const (
	seenNone seenBreaker = iota
	seenClosed
	seenOpen
	seenHalfOpen
)

func (s seenBreaker) String() string {
	switch s {
	case seenClosed:
		return string(Closed)
	case seenOpen:
		return string(Open)
	case seenHalfOpen:
		return string(HalfOpen)
	}
	return ""
}

func noop() {}

// deadlineCtx reports the route's deadline (for dials, quota waits and
// Retry-After decisions) while its cancellation stays under our control.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// ctxError is the error for a context that ended: the route's timeout, or
// anything else (the client going away) as context.Canceled.
func (st *reqState) ctxError() error {
	if st.ending() == ending.Timeout {
		return &RejectedError{Err: ErrTimeout}
	}
	return context.Canceled
}

// ending is why the request's context ended, if it did (ending.Of).
func (st *reqState) ending() ending.Reason {
	return ending.Of(context.Cause(st.ctx), st.req.Context())
}

// errFinished ends a request's context once it is done with: its own end,
// which ending.Of tells from the route's timeout (a late hedge failing
// under it is nobody's failure).
var errFinished = errors.New("request finished")

// fillTrace adds what the request went through to the caller's Trace:
// added, not set, because one request may pass the pipeline twice (the
// resend after an upstream 401, auth.Transport) and both sends are
// attempts (SPEC Part 3). Hedges write reqState concurrently; the Trace
// is written here only, on RoundTrip's goroutine, so the caller may read
// it unguarded.
func (st *reqState) fillTrace() {
	t := st.trace
	if t == nil {
		return
	}
	t.Attempts += int(st.attempts.Load())
	t.Retries += int(st.retries.Load())
	st.mu.Lock()
	t.Breaker = st.breaker.String()
	st.mu.Unlock()
}

func (st *reqState) setBreaker(s seenBreaker) {
	if st.trace != nil {
		st.mu.Lock()
		st.breaker = s
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
