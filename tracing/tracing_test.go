package tracing

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/lifecycle"
)

// No tracing block, no Tracer; the zero Span is none.
func TestNoBlockNoTracer(t *testing.T) {
	tr, err := Of(nil, lifecycle.New())
	if tr != nil || err != nil {
		t.Errorf("Of(nil) = %v, %v; want nil, nil", tr, err)
	}
	var sp Span
	if sp.Started() {
		t.Error("the zero Span is Started")
	}
}

// A request's span continues the client's trace; each attempt goes out
// with a traceparent of its own, a child in the same trace, on a copy of
// the headers (hedges share the original).
func TestSpanContinuesClientTrace(t *testing.T) {
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientParent := "00f067aa0ba902b7"
	tr, err := New(&config.Tracing{OTLPEndpoint: testkit.DeadURL(t), SampleRatio: 1, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Close(ctx) // the export fails: nobody listens
	}()
	r, _ := http.NewRequest(http.MethodPost, "http://breakwater/mcp", nil)
	r.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
	sp := tr.Start(r, time.Now())
	if !sp.Started() || sp.TraceID() != clientTrace {
		t.Fatalf("span trace %s, want the client's %s", sp.TraceID(), clientTrace)
	}
	out, end := sp.StartAttempt(r, 1, "", 0)
	defer end(200, "")
	tp := out.Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-"+clientTrace+"-") || strings.Contains(tp, clientParent) {
		t.Errorf("attempt traceparent %q, want a child span in trace %s", tp, clientTrace)
	}
	if got := r.Header.Get("Traceparent"); got != "00-"+clientTrace+"-"+clientParent+"-01" {
		t.Errorf("the attempt rewrote the shared header: %q", got)
	}
	sp.End(Outcome{Method: r.Method, Path: r.URL.Path, Status: 200, Outcome: "upstream", Attempts: 1})
}
