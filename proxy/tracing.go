package proxy

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/policy"
)

// Tracing (config `tracing`): a span per request, continued from the
// client's W3C traceparent or started here, and a child span per attempt,
// whose context goes upstream as the attempt's traceparent. Without a
// tracing block none of this runs: the request path tests one nil pointer.

// tracing is one tracing block's exporter and tracer. The registry keeps
// it while a reload leaves the block alone.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// propagator reads and writes traceparent and tracestate.
var propagator = propagation.TraceContext{}

// newTracing starts the OTLP/HTTP exporter of c. The exporter sends in
// batches, in the background; nothing is sent until the first span ends.
func newTracing(c *config.Tracing) (*tracing, error) {
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.TracesURL()))
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		// A client's sampled flag decides for its trace; ours for new ones.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", c.ServiceName))),
	)
	return &tracing{provider: tp, tracer: tp.Tracer("github.com/breakwater-proxy/breakwater/proxy")}, nil
}

// tracingOf is the tracing of block c from reg: the running one when a
// reload left the block alone; nil without a block.
func tracingOf(c *config.Tracing, reg *lifecycle.Registry) (*tracing, error) {
	if c == nil {
		return nil, nil
	}
	return lifecycle.TryGet(reg, "tracing", "", c, func() (*tracing, error) { return newTracing(c) })
}

// Retire: requests that started on the old config still end their spans
// on this tracer; Close flushes them once they have had their grace.
func (t *tracing) Retire() {}

// Close flushes the spans not yet exported and stops the exporter, within
// ctx and at most flushTimeout.
func (t *tracing) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	return t.provider.Shutdown(ctx)
}

// flushTimeout bounds a replaced tracer's last flush, as the exporter's
// own default timeout does one export.
const flushTimeout = 10 * time.Second

// startSpan starts the request's span, a child of the client's
// traceparent when it sent a valid one.
func (rq *request) startSpan(t *tracing, r *http.Request) {
	ctx := propagator.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
	rq.spanCtx, rq.span = t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(rq.start))
	rq.tracer = t.tracer
	rq.traceID = rq.span.SpanContext().TraceID().String()
	rq.trace.Tracer = rq
}

// endSpan ends the request's span with what became of the request.
func (rq *request) endSpan(r *http.Request, routeName string, status int) {
	sp := rq.span
	if sp.IsRecording() {
		if routeName != "" {
			sp.SetName(r.Method + " " + routeName)
		}
		sp.SetAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.Int("http.response.status_code", status),
			attribute.String("breakwater.route", routeName),
			attribute.String("breakwater.outcome", rq.outcome),
			attribute.Int("breakwater.attempts", rq.trace.Attempts),
			attribute.String("breakwater.request_id", rq.id),
		)
		if rq.trace.Breaker != "" {
			sp.SetAttributes(attribute.String("breakwater.breaker", rq.trace.Breaker))
		}
		if rq.call.method != "" {
			sp.SetAttributes(attribute.String("rpc.method", clip(rq.call.method)))
			if rq.call.tool != "" {
				sp.SetAttributes(attribute.String("mcp.tool", clip(rq.call.tool)))
			}
		}
		if rq.errKind != "" {
			sp.SetAttributes(attribute.String("error.type", string(rq.errKind)))
		}
		if status >= 500 {
			sp.SetStatus(codes.Error, string(rq.errKind))
		}
	}
	sp.End()
}

// StartAttempt is policy.AttemptTracer: a client span per attempt, whose
// context the upstream gets as traceparent.
func (rq *request) StartAttempt(req *http.Request, n int, breaker policy.State, quotaWait time.Duration) (*http.Request, func(int, string)) {
	ctx, sp := rq.tracer.Start(rq.spanCtx, "attempt", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.Int("breakwater.attempt", n),
			attribute.String("breakwater.breaker", string(breaker)),
			attribute.Float64("breakwater.quota_wait_seconds", quotaWait.Seconds()),
		))
	// Hedges share req's header map: the attempt's traceparent goes on a
	// copy of its own.
	out := req.WithContext(req.Context())
	out.Header = req.Header.Clone()
	propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return out, func(status int, errKind string) {
		if status > 0 {
			sp.SetAttributes(attribute.Int("http.response.status_code", status))
		}
		if errKind != "" {
			sp.SetAttributes(attribute.String("error.type", errKind))
			sp.SetStatus(codes.Error, errKind)
		} else if status >= 500 {
			sp.SetStatus(codes.Error, "")
		}
		sp.End()
	}
}
