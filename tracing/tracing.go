// Package tracing is breakwater's OpenTelemetry tracing (config
// `tracing`): the exporter, sampler and provider of one tracing block, as
// a lifecycle item that a reload keeps while the block stays and flushes
// when it is dropped; and the spans the proxy makes with it: a server span
// per request, continued from the client's W3C traceparent or started
// here, and a client span per attempt, whose context goes upstream as the
// attempt's traceparent.
//
// proxy starts and ends the spans through Tracer.Start and Span; it does
// not import OpenTelemetry itself. Without a tracing block there is no
// Tracer, and the request path tests one nil pointer.
package tracing

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

// Tracer is one tracing block's exporter and tracer.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// propagator reads and writes traceparent and tracestate.
var propagator = propagation.TraceContext{}

// New starts the OTLP/HTTP exporter of c. The exporter sends in batches,
// in the background; nothing is sent until the first span ends.
func New(c *config.Tracing) (*Tracer, error) {
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
	return &Tracer{provider: tp, tracer: tp.Tracer("github.com/breakwater-proxy/breakwater/proxy")}, nil
}

// Of is the Tracer of block c from reg: the running one when a reload
// left the block alone; nil without a block.
func Of(c *config.Tracing, reg *lifecycle.Registry) (*Tracer, error) {
	if c == nil {
		return nil, nil
	}
	return lifecycle.TryGet(reg, "tracing", "", c, func() (*Tracer, error) { return New(c) })
}

var _ lifecycle.Retirer = (*Tracer)(nil)

// Retire: requests that started on the old config still end their spans
// on this tracer; Close flushes them once they have had their grace.
func (t *Tracer) Retire() {}

// Close flushes the spans not yet exported and stops the exporter, within
// ctx and at most flushTimeout.
func (t *Tracer) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	return t.provider.Shutdown(ctx)
}

// flushTimeout bounds a replaced tracer's last flush, as the exporter's
// own default timeout does one export.
const flushTimeout = 10 * time.Second

// Span is one request's server span; it makes the attempts' client spans
// (policy.AttemptTracer). The zero Span is none: Started is false.
type Span struct {
	span   trace.Span
	ctx    context.Context // carries span, as the attempts' parent
	tracer trace.Tracer
}

// Start starts r's server span at start, a child of the client's
// traceparent when it sent a valid one.
func (t *Tracer) Start(r *http.Request, start time.Time) Span {
	ctx := propagator.Extract(context.Background(), propagation.HeaderCarrier(r.Header))
	ctx, sp := t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start))
	return Span{span: sp, ctx: ctx, tracer: t.tracer}
}

// Started reports whether s is a span (not the zero Span).
func (s *Span) Started() bool { return s.span != nil }

// TraceID is the span's trace id in hex, for error bodies and the access
// log.
func (s *Span) TraceID() string { return s.span.SpanContext().TraceID().String() }

// Outcome is what became of a request, as its span records it.
type Outcome struct {
	Method, Path string
	Route        string // "" when none matched
	Status       int
	Outcome      string // upstream, cache_hit, stale, fallback, rejected
	Attempts     int
	RequestID    string
	Breaker      string // the breaker's state that admitted the last attempt; "" = none
	RPCMethod    string // the JSON-RPC method, "" when none
	Tool         string // the MCP tool called, "" when none
	ErrorKind    string // breakwater's error kind; "" = none
}

// End ends the span with what became of the request; a status of 500 or
// more marks it an error.
func (s *Span) End(o Outcome) {
	sp := s.span
	if sp.IsRecording() {
		if o.Route != "" {
			sp.SetName(o.Method + " " + o.Route)
		}
		sp.SetAttributes(
			attribute.String("http.request.method", o.Method),
			attribute.String("url.path", o.Path),
			attribute.Int("http.response.status_code", o.Status),
			attribute.String("breakwater.route", o.Route),
			attribute.String("breakwater.outcome", o.Outcome),
			attribute.Int("breakwater.attempts", o.Attempts),
			attribute.String("breakwater.request_id", o.RequestID),
		)
		if o.Breaker != "" {
			sp.SetAttributes(attribute.String("breakwater.breaker", o.Breaker))
		}
		if o.RPCMethod != "" {
			sp.SetAttributes(attribute.String("rpc.method", o.RPCMethod))
			if o.Tool != "" {
				sp.SetAttributes(attribute.String("mcp.tool", o.Tool))
			}
		}
		if o.ErrorKind != "" {
			sp.SetAttributes(attribute.String("error.type", o.ErrorKind))
		}
		if o.Status >= 500 {
			sp.SetStatus(codes.Error, o.ErrorKind)
		}
	}
	sp.End()
}

var _ policy.AttemptTracer = (*Span)(nil)

// StartAttempt is policy.AttemptTracer: a client span per attempt, whose
// context the upstream gets as traceparent.
func (s *Span) StartAttempt(req *http.Request, n int, breaker policy.State, quotaWait time.Duration) (*http.Request, func(int, string)) {
	ctx, sp := s.tracer.Start(s.ctx, "attempt", trace.WithSpanKind(trace.SpanKindClient),
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
