package proxy

import (
	"context"
	"encoding/json"
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
	"github.com/breakwater-proxy/breakwater/policy"
)

// Tracing (config `tracing`): a span per request, continued from the
// client's W3C traceparent or started here, and a child span per attempt,
// whose context goes upstream as the attempt's traceparent. Without a
// tracing block none of this runs: the request path tests one nil pointer.

// tracing is one tracing block's exporter and tracer.
type tracing struct {
	key      string // the block's settings, to tell whether a reload changed them
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// propagator reads and writes traceparent and tracestate.
var propagator = propagation.TraceContext{}

// newTracing starts the OTLP/HTTP exporter of c. The exporter sends in
// batches, in the background; nothing is sent until the first span ends.
func newTracing(c *config.Tracing) (*tracing, error) {
	key, _ := json.Marshal(c)
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
	return &tracing{key: string(key), provider: tp, tracer: tp.Tracer("github.com/breakwater-proxy/breakwater/proxy")}, nil
}

// useTracing makes the tracing of cfg current, keeping the running one
// when its settings did not change; a replaced one flushes and stops in
// the background.
func (s *Server) useTracing(c *config.Tracing) error {
	old := s.tracing.Load()
	if c == nil {
		s.tracing.Store(nil)
		stopTracing(old)
		return nil
	}
	if key, _ := json.Marshal(c); old != nil && old.key == string(key) {
		return nil
	}
	tr, err := newTracing(c)
	if err != nil {
		return err
	}
	s.tracing.Store(tr)
	stopTracing(old)
	return nil
}

func stopTracing(t *tracing) {
	if t == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = t.provider.Shutdown(ctx)
	}()
}

// Close stops the Server's background work: the health checks, then the
// tracing exporter, flushing the spans not yet exported within ctx. It may
// be called more than once. The Server is not to serve afterwards.
func (s *Server) Close(ctx context.Context) error {
	s.stopChecks()
	if t := s.tracing.Swap(nil); t != nil {
		return t.provider.Shutdown(ctx)
	}
	return nil
}

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
