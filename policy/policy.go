// Package policy turns a route's validated config into a resilient
// http.RoundTripper built from failsafe-go policies. It knows failsafe-go
// and *http.Response, not routing, ResponseWriters, Prometheus or zerolog:
// what happens is reported through an Observer that the proxy implements.
//
// The composition, outermost first (SPEC.md, Semantics → Order):
//
//	total timeout → bulkhead → retry (with budget) → hedge → circuit breaker → upstream quota → per-try timeout → transport
//
// In failsafe's notation the middle is failsafe.With(retry, hedge)(attempt),
// and attempt does budget → breaker → quota → per-try timeout → transport
// itself, because a proxy needs what failsafe's executors do not give: a
// budget that counts attempts (budget.go), a breaker that never records
// client cancellations or quota waits, a quota that is spent only by
// attempts actually sent, per-attempt contexts that outlive the executor
// (a streamed body is read after it returns), and bodies of discarded
// responses drained and closed.
//
// Files: pipeline.go (RoundTrip, the request's timer and executors),
// attempt.go (one attempt), body.go (bodies sent and received), retry.go
// (retry and hedge decisions), breaker.go, bulkhead.go, budget.go,
// quota.go (the policies' state).
package policy

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/ending"
)

// Errors the pipeline returns instead of a response. The proxy maps each to
// an error kind and a status in one place.
var (
	// ErrCircuitOpen: the breaker is open (or half-open with every probe out).
	ErrCircuitOpen = errors.New("circuit breaker open")
	// ErrBulkheadFull: no slot within bulkhead.max_wait (or the upstream's
	// concurrency.max_wait), the queue full, or shed for a higher priority.
	ErrBulkheadFull = errors.New("bulkhead full")
	// ErrQuotaExhausted: no upstream quota token within max_wait or the route's time.
	ErrQuotaExhausted = errors.New("upstream quota exhausted")
	// ErrTimeout: the route's total timeout passed before response headers.
	// It is ending.ErrTimeout, the cause the pipeline's timer cancels the
	// request with, so that ending.Of tells it from a client that left.
	ErrTimeout = ending.ErrTimeout
	// ErrAttemptTimeout: one attempt passed retry.per_try_timeout.
	ErrAttemptTimeout = errors.New("attempt timed out")
)

// RejectedError carries a sentinel above with the time after which trying
// again makes sense (0 when unknown).
type RejectedError struct {
	Err        error
	RetryAfter time.Duration
	// Reason says which of the sentinel's causes it was (a bulkhead's
	// queue was full, or the wait ran out); the caller words it for its
	// users. Zero: the sentinel says all there is.
	Reason Reason
}

// Reason is why a policy turned a request away, where its sentinel error
// has more than one cause.
type Reason uint8

const (
	// Unspecified: the sentinel says all there is.
	Unspecified Reason = iota
	// QueueFull: every slot was taken and the bulkhead's queue was full
	// (or it has none), so the caller was turned away at once.
	QueueFull
	// WaitRanOut: the caller waited max_wait (or what was left of the
	// route's timeout) in the queue without getting a slot.
	WaitRanOut
	// Shed: the caller gave its place in a full queue to a
	// higher-priority one.
	Shed
)

func (e *RejectedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v (retry after %s)", e.Err, e.RetryAfter.Round(time.Millisecond))
	}
	return e.Err.Error()
}

func (e *RejectedError) Unwrap() error { return e.Err }

// RetryAfterOf returns the RetryAfter an error carries, if any.
func RetryAfterOf(err error) time.Duration {
	var re *RejectedError
	if errors.As(err, &re) {
		return re.RetryAfter
	}
	return 0
}

// ReasonOf returns the Reason an error carries, if any.
func ReasonOf(err error) Reason {
	var re *RejectedError
	if errors.As(err, &re) {
		return re.Reason
	}
	return Unspecified
}

// Observer receives what the pipeline does. Calls are synchronous on the
// request's goroutine (or a hedge's): implementations must be quick and
// must not block.
type Observer interface {
	// Attempt reports one attempt sent upstream; result is a status class
	// ("2xx"…"5xx") or an error kind ("connect_error", "timeout", "canceled", "error").
	Attempt(route, upstream, result string, d time.Duration)
	// Retry reports a retry about to be sent and why ("503", "connect_error", "timeout"…).
	Retry(route, reason string)
	// BudgetExhausted reports a retry or hedge refused by the budget.
	BudgetExhausted(route string)
	// Hedge reports a hedged attempt: result is "sent", "won" or "lost".
	Hedge(route, result string)
	// BreakerChanged reports a breaker transition.
	BreakerChanged(breaker string, from, to State)
	// BulkheadInFlight reports the route's bulkhead occupancy after a change.
	BulkheadInFlight(route string, n int)
	// BulkheadRejected reports a request turned away by a full bulkhead.
	BulkheadRejected(route string)
	// QuotaWaited reports time spent waiting for an upstream quota token.
	QuotaWaited(upstream string, d time.Duration)
	// QuotaExhausted reports a request that could not get a token in time.
	QuotaExhausted(upstream, route string, retryAfter time.Duration)
	// QuotaPaused reports an upstream paused by its own Retry-After.
	QuotaPaused(upstream string, d time.Duration)
	// QueueWaiting reports a caller joining (delta 1) or leaving (-1) a
	// queue: scope "bulkhead" (name: the route, or the upstream for its
	// concurrency) or "quota" (name: the upstream).
	QueueWaiting(scope, name string, prio Priority, delta int)
	// QueueWaited reports how long a caller waited in a queue, served or not.
	QueueWaited(scope, name string, prio Priority, d time.Duration)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) Attempt(string, string, string, time.Duration)       {}
func (NopObserver) Retry(string, string)                                {}
func (NopObserver) BudgetExhausted(string)                              {}
func (NopObserver) Hedge(string, string)                                {}
func (NopObserver) BreakerChanged(string, State, State)                 {}
func (NopObserver) BulkheadInFlight(string, int)                        {}
func (NopObserver) BulkheadRejected(string)                             {}
func (NopObserver) QuotaWaited(string, time.Duration)                   {}
func (NopObserver) QuotaExhausted(string, string, time.Duration)        {}
func (NopObserver) QuotaPaused(string, time.Duration)                   {}
func (NopObserver) QueueWaiting(string, string, Priority, int)          {}
func (NopObserver) QueueWaited(string, string, Priority, time.Duration) {}

// Trace is one request's passage, shared with the caller: the proxy hands
// it over through the function it gives NewPipeline, fills Deadline
// before RoundTrip, and reads the rest for its access-log line once
// RoundTrip has returned. The pipeline writes the rest only from the
// goroutine that called RoundTrip, before RoundTrip returns.
type Trace struct {
	Attempts int    // attempts sent upstream
	Breaker  string // breaker state when the request was decided ("" = none)
	Retries  int
	// Deadline, when set, is when the route's total timeout ends, so that
	// time the caller already spent on this request (a coalesced cache
	// wait) comes out of the same budget: one clock for the route
	// timeout. Already passed: RoundTrip fails with ErrTimeout at once and
	// sends nothing. Zero: RoundTrip's start plus the route's timeout.
	Deadline time.Time
	// Repeat is the caller's word on whether the request may be sent
	// again: RepeatByMethod (zero) leaves it to retry.methods; RepeatSafe
	// and RepeatNever decide it whatever the method (a tools/call whose
	// tool is, or is not, annotated read-only or idempotent).
	Repeat Repeat
	// Tracer, when set, is told of each attempt sent (tracing); nil: none.
	Tracer AttemptTracer
	// Priority places the request in the queues it waits in (bulkhead,
	// upstream concurrency, upstream quota); the caller sets it before
	// RoundTrip. Zero: Normal.
	Priority Priority
}

// AttemptTracer follows one request's attempts.
type AttemptTracer interface {
	// StartAttempt is called as attempt n (1-based) is about to be sent,
	// with the breaker state that admitted it ("" = no breaker) and the
	// time it waited for a quota token. It returns the request to send
	// (the same, or a copy with headers of its own, e.g. a traceparent;
	// hedges run concurrently, so it must not write req's headers) and the
	// function that ends the attempt with its status (0 when none) and
	// error kind ("" for a response).
	StartAttempt(req *http.Request, n int, breaker State, quotaWait time.Duration) (*http.Request, func(status int, errKind string))
}

// Repeat is Trace.Repeat.
type Repeat uint8

const (
	RepeatByMethod Repeat = iota
	RepeatSafe
	RepeatNever
)
