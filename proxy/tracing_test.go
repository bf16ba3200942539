package proxy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// otlpReceiver is a real OTLP/HTTP endpoint: it decodes what the exporter
// posts to /v1/traces.
type otlpReceiver struct {
	url      string
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
	paths    []string
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	o := &otlpReceiver{}
	srv := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("OTLP body does not decode: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.paths = append(o.paths, r.URL.Path)
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.GetAttributes() {
				if a.Key == "service.name" {
					o.services = append(o.services, a.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	})
	o.url = srv.URL + "/otel" // a base URL with a path of its own
	return o
}

func (o *otlpReceiver) received() ([]*tracepb.Span, []string, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...), append([]string(nil), o.services...), append([]string(nil), o.paths...)
}

func attrOf(sp *tracepb.Span, key string) *commonpb.AnyValue {
	for _, a := range sp.Attributes {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

const (
	clientTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientParent = "00f067aa0ba902b7"
)

// TestTracingSpans: the client's traceparent is continued; the request is
// a server span, each attempt (a 503, then its retry) a client span under
// it with its number, status and breaker state; each attempt's traceparent
// reaches the upstream with the attempt's span id; spans go to /v1/traces
// under the endpoint's path.
func TestTracingSpans(t *testing.T) {
	recv := newOTLPReceiver(t)
	var mu sync.Mutex
	var seen []string
	var n atomic.Int32
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Traceparent"))
		mu.Unlock()
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	p := startProxy(t, `
tracing: { otlp_endpoint: "{{OTLP}}", service_name: bw-test }
upstreams: { api: { url: "{{UP}}" } }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
    retry: { backoff: { initial: 10ms, max: 20ms } }
`, map[string]string{"UP": up.URL, "OTLP": recv.url})
	req := newRequest(t, http.MethodGet, p.URL+"/items", nil)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
	resp, body := do(t, p.Client(), req)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q, want the retry's 200", resp.StatusCode, body)
	}
	testkit.WaitFor(t, 5*time.Second, "the access-log line", func() bool { return accessLine(t, p.logs, resp.Header.Get("X-Request-Id")) != nil })
	if got := accessLine(t, p.logs, resp.Header.Get("X-Request-Id"))["trace_id"]; got != clientTrace {
		t.Errorf("access log trace_id = %v, want the client's %s", got, clientTrace)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.srv.Close(ctx); err != nil {
		t.Fatalf("Close (flush): %v", err)
	}
	spans, services, paths := recv.received()
	if len(paths) == 0 || paths[0] != "/otel/v1/traces" || services[0] != "bw-test" {
		t.Errorf("export paths %v, services %v; want /otel/v1/traces and bw-test", paths, services)
	}
	var server *tracepb.Span
	var attempts []*tracepb.Span
	for _, sp := range spans {
		switch sp.Kind {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = sp
		case tracepb.Span_SPAN_KIND_CLIENT:
			attempts = append(attempts, sp)
		}
	}
	if server == nil || len(attempts) != 2 {
		t.Fatalf("spans: server %v, %d attempts; want one server span and two attempts", server != nil, len(attempts))
	}
	if hex.EncodeToString(server.TraceId) != clientTrace || hex.EncodeToString(server.ParentSpanId) != clientParent {
		t.Errorf("server span trace %x parent %x, want the client's %s / %s", server.TraceId, server.ParentSpanId, clientTrace, clientParent)
	}
	if server.Name != "GET api" || attrOf(server, "breakwater.attempts").GetIntValue() != 2 || attrOf(server, "http.response.status_code").GetIntValue() != 200 {
		t.Errorf("server span %q attributes %v", server.Name, server.Attributes)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, want := range []int64{503, 200} {
		sp := attempts[i]
		if a := attrOf(sp, "breakwater.attempt").GetIntValue(); a != int64(i+1) {
			sp = attempts[1-i] // exported in any order
		}
		if attrOf(sp, "breakwater.attempt").GetIntValue() != int64(i+1) || attrOf(sp, "http.response.status_code").GetIntValue() != want ||
			attrOf(sp, "breakwater.breaker").GetStringValue() != "closed" || attrOf(sp, "breakwater.quota_wait_seconds") == nil {
			t.Errorf("attempt %d attributes %v", i+1, sp.Attributes)
		}
		if hex.EncodeToString(sp.TraceId) != clientTrace || string(sp.ParentSpanId) != string(server.SpanId) {
			t.Errorf("attempt %d: trace %x parent %x, want %s under the server span %x", i+1, sp.TraceId, sp.ParentSpanId, clientTrace, server.SpanId)
		}
		want := "00-" + clientTrace + "-" + hex.EncodeToString(sp.SpanId) + "-01"
		if seen[i] != want {
			t.Errorf("upstream saw traceparent %q on attempt %d, want %q", seen[i], i+1, want)
		}
	}
}

// TestTracingErrorBodies: breakwater's own errors carry the trace id, in
// the problem form and the JSON-RPC form; a request without traceparent
// starts a trace.
func TestTracingErrorBodies(t *testing.T) {
	recv := newOTLPReceiver(t)
	p := startProxy(t, `
tracing: { otlp_endpoint: "{{OTLP}}" }
upstreams: { api: { url: "http://127.0.0.1:1" } }
routes:
  - name: api
    match: { path: /only }
    upstream: api
`, map[string]string{"OTLP": recv.url})
	t.Cleanup(func() { _ = p.srv.Close(context.Background()) })
	resp, body := p.get(t, "/nowhere")
	var prob struct {
		TraceID string `json:"trace_id"`
	}
	if err := json.Unmarshal(body, &prob); err != nil || len(prob.TraceID) != 32 || resp.StatusCode != 404 {
		t.Errorf("problem body %s: want a trace_id", body)
	}
	req := newRequest(t, http.MethodPost, p.URL+"/nowhere", strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
	_, body = do(t, p.Client(), req)
	var rpc struct {
		Error struct {
			Data struct {
				TraceID string `json:"trace_id"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &rpc); err != nil || rpc.Error.Data.TraceID != clientTrace {
		t.Errorf("JSON-RPC body %s: want data.trace_id %s", body, clientTrace)
	}
}

// Without tracing, error bodies have no trace_id and the client's
// traceparent passes through untouched.
func TestNoTracing(t *testing.T) {
	var got atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { got.Store(r.Header.Get("Traceparent")) })
	p := startProxy(t, `
upstreams: { api: { url: "{{UP}}" } }
routes:
  - name: api
    match: { path: /only }
    upstream: api
`, map[string]string{"UP": up.URL})
	if _, body := p.get(t, "/nowhere"); strings.Contains(string(body), "trace_id") {
		t.Errorf("problem body %s has a trace_id without tracing", body)
	}
	tp := "00-" + clientTrace + "-" + clientParent + "-01"
	req := newRequest(t, http.MethodGet, p.URL+"/only", nil)
	req.Header.Set("Traceparent", tp)
	do(t, p.Client(), req)
	if got.Load() != tp {
		t.Errorf("upstream saw traceparent %v, want the client's", got.Load())
	}
}

// sample_ratio 0: a new trace is not recorded, yet it is started and
// forwarded (flags 00), and the error body still names it; a client's
// sampled trace is followed.
func TestTracingUnsampled(t *testing.T) {
	recv := newOTLPReceiver(t)
	var got atomic.Value
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { got.Store(r.Header.Get("Traceparent")) })
	p := startProxy(t, `
tracing: { otlp_endpoint: "{{OTLP}}", sample_ratio: 0 }
upstreams: { api: { url: "{{UP}}" } }
routes:
  - name: api
    match: { path: /only }
    upstream: api
`, map[string]string{"UP": up.URL, "OTLP": recv.url})
	p.get(t, "/only")
	tp, _ := got.Load().(string)
	if len(tp) != 55 || !strings.HasSuffix(tp, "-00") || strings.Contains(tp, clientTrace) {
		t.Errorf("upstream saw traceparent %q, want a new unsampled one", tp)
	}
	req := newRequest(t, http.MethodGet, p.URL+"/only", nil)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
	do(t, p.Client(), req)
	if err := p.srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans, _, _ := recv.received()
	for _, sp := range spans {
		if hex.EncodeToString(sp.TraceId) != clientTrace {
			t.Errorf("exported a span of trace %x, want only the client's sampled trace", sp.TraceId)
		}
	}
	if len(spans) != 2 {
		t.Errorf("exported %d spans, want the sampled request's two", len(spans))
	}
}
