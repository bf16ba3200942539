package proxy

import (
	"net/http"

	"github.com/breakwater-proxy/breakwater/tracing"
)

// The request's part of tracing (the exporter, sampler and spans are
// package tracing's): a span per request, made the pipeline's attempt
// tracer, ended with what became of the request.

// startSpan starts the request's span, a child of the client's
// traceparent when it sent a valid one.
func (rq *request) startSpan(t *tracing.Tracer, r *http.Request) {
	rq.span = t.Start(r, rq.start)
	rq.traceID = rq.span.TraceID()
	rq.trace.Tracer = &rq.span
}

// endSpan ends the request's span with what became of the request.
func (rq *request) endSpan(r *http.Request, routeName string, status int) {
	o := tracing.Outcome{
		Method: r.Method, Path: r.URL.Path, Route: routeName, Status: status, Outcome: rq.outcome,
		Attempts: rq.trace.Attempts, RequestID: rq.id, Breaker: rq.trace.Breaker, ErrorKind: string(rq.errKind),
	}
	if rq.call.method != "" {
		o.RPCMethod, o.Tool = clip(rq.call.method), clip(rq.call.tool)
	}
	rq.span.End(o)
}
