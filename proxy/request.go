package proxy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/clients"
	"github.com/breakwater-proxy/breakwater/mcp"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/tracing"
)

// request is everything the proxy knows about one request. It is made
// once, when the request arrives, and travels as the one context value of
// the request (requestKey): ReverseProxy hands its callbacks only an
// *http.Request, so the context is the channel. The pipeline reads the
// trace through requestTrace, which the proxy gives it at build time.
type request struct {
	lw       logWriter // the response writer, in the same allocation
	idHdr    []string  // []string{id}, shared by the upstream request and the response
	idArr    [1]string // idHdr's backing array
	start    time.Time
	client   context.Context // the server's own: ends only when the client leaves
	deadline time.Time       // the route's timeout, one clock for cache waits and the pipeline
	id       string
	table    *table // the table the request started on: its route's, its log settings
	route    *route
	trace    policy.Trace
	rpc      *jsonrpcRequest // the id an error answer carries; nil: the problem form
	// jsonrpc is what the body says as JSON-RPC, and call its single
	// request's method and tool, both read from the body once (readCall):
	// callRead says it was read whole, callErr is why it was refused.
	jsonrpc  mcp.Body
	call     rpcCall
	callRead bool
	// tierSlot: the request holds one of its caller's max_concurrent
	// slots (release). Here, beside callRead, it fits in padding: a
	// request stays within its allocation's size class.
	tierSlot bool
	callErr  error
	ahead    readAhead // the body read before sending, for the call and for replay

	// span is the request's trace span, not Started without tracing;
	// traceID is for error bodies and the access log.
	span    tracing.Span
	traceID string
	body    clientBody // the client's body reader, when there is a body

	// caller is the client its key identified (nil: anonymous, or a route
	// without client_auth), tier its tier, tierName the tier label of
	// logs and metrics ("anonymous" for an unidentified caller).
	caller   *clients.Client
	tier     *tierState
	tierName string

	outcome  string // upstream, cache_hit, stale, fallback, rejected
	cacheRes string // hit, miss, stale ("" = no cache)
	errKind  Kind
	detail   string // an error answer's own detail, "" for its kind's (upstream_auth_failed says why)

	stale   *cache.Entry // an entry that may answer if the upstream fails
	capture *capture     // set when the upstream's answer is to be cached

	// bodyErr is why the client's body failed (too large, malformed,
	// stalled), set by the body reader; it decides the request's error
	// kind whatever the attempt made of it.
	bodyErr atomic.Pointer[error]
}

type requestKey struct{}

func requestFrom(ctx context.Context) *request {
	rq, _ := ctx.Value(requestKey{}).(*request)
	return rq
}

// requestTrace is how the pipeline finds the trace to fill.
func requestTrace(ctx context.Context) *policy.Trace {
	if rq := requestFrom(ctx); rq != nil {
		return &rq.trace
	}
	return nil
}

// idHeader is the request id as a header value, built once.
func (rq *request) idHeader() []string {
	if rq.idHdr == nil {
		rq.idArr[0] = rq.id
		rq.idHdr = rq.idArr[:1:1] // in the request's own allocation
	}
	return rq.idHdr
}

// setBodyErr records the first reason the client's body failed.
func (rq *request) setBodyErr(err error) {
	rq.bodyErr.CompareAndSwap(nil, &err)
}

// bodyFailure is why the client's body failed, or nil.
func (rq *request) bodyFailure() error {
	if p := rq.bodyErr.Load(); p != nil {
		return *p
	}
	return nil
}
