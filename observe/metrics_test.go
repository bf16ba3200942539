package observe

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsRequestCache: the per-request path counts into the same
// series as WithLabelValues would, and allocates nothing once a route's
// label set has been seen.
func TestMetricsRequestCache(t *testing.T) {
	m := NewMetrics("test")
	m.Request("r", "GET", 200, "upstream", "", time.Millisecond)
	m.Request("r", "GET", 200, "upstream", "", time.Millisecond)
	m.Request("r", "BREW", 418, "upstream", "", time.Millisecond)
	m.Request("", "GET", 404, "rejected", "", time.Millisecond)
	m.Attempt("r", "up", "2xx", 0)
	m.Attempt("r", "up", "2xx", 0)
	m.CacheLookup("r", "hit")
	m.BulkheadInFlight("r", 3)
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.requests.WithLabelValues("r", "GET", "200", "upstream", "")), 2, "requests r GET 200"},
		{testutil.ToFloat64(m.requests.WithLabelValues("r", "OTHER", "418", "upstream", "")), 1, "requests r OTHER 418"},
		{testutil.ToFloat64(m.requests.WithLabelValues("", "GET", "404", "rejected", "")), 1, `requests "" GET 404`},
		{testutil.ToFloat64(m.attempts.WithLabelValues("r", "up", "2xx")), 2, "attempts r up 2xx"},
		{testutil.ToFloat64(m.cacheLookups.WithLabelValues("r", "hit")), 1, "cache r hit"},
		{testutil.ToFloat64(m.bulkheadInFl.WithLabelValues("r")), 3, "bulkhead r"},
		{float64(testutil.CollectAndCount(m.duration)), 2, "duration series"},
		{float64(testutil.CollectAndCount(m.bulkheadInFl)), 1, "bulkhead series (only routes that report one)"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		m.Request("r", "GET", 200, "upstream", "", time.Millisecond)
		m.Attempt("r", "up", "2xx", 0)
		m.CacheLookup("r", "hit")
		m.BulkheadInFlight("r", 1)
	})
	if allocs != 0 {
		t.Errorf("per-request metrics allocate %v times", allocs)
	}
}

// TestMetricsConcurrentFirstUse: many goroutines meeting new label sets
// at once all count into one series each.
func TestMetricsConcurrentFirstUse(t *testing.T) {
	m := NewMetrics("test")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				m.Request(fmt.Sprint("r", i%10), "GET", 200+(i/10)%5, "upstream", "", 0)
			}
		}()
	}
	wg.Wait()
	if n := testutil.CollectAndCount(m.requests); n != 50 {
		t.Fatalf("%d request series, want 50", n)
	}
	for r := range 10 {
		for c := range 5 {
			if v := testutil.ToFloat64(m.requests.WithLabelValues(fmt.Sprint("r", r), "GET", fmt.Sprint(200+c), "upstream", "")); v != 8*400/50 {
				t.Fatalf("r%d %d: %v, want %d", r, 200+c, v, 8*400/50)
			}
		}
	}
}

// BenchmarkMetricsRequest is what every request costs in metrics; compare
// with BenchmarkMetricsRequestUncached, the WithLabelValues way.
func BenchmarkMetricsRequest(b *testing.B) {
	m := NewMetrics("test")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Request("route", "GET", 200, "upstream", "", time.Millisecond)
		}
	})
}

func BenchmarkMetricsRequestUncached(b *testing.B) {
	m := NewMetrics("test")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.requests.WithLabelValues("route", boundedMethod("GET"), fmt.Sprint(200), "upstream").Inc()
			m.duration.WithLabelValues("route").Observe(0.001)
		}
	})
}

// TestMetricsToolLabel: a tool gets its own request and duration series,
// found again without allocating.
func TestMetricsToolLabel(t *testing.T) {
	m := NewMetrics("test")
	m.Request("mcp", "POST", 200, "upstream", "search", time.Millisecond)
	m.Request("mcp", "POST", 200, "upstream", "search", time.Millisecond)
	m.Request("mcp", "POST", 200, "upstream", "", time.Millisecond)
	if v := testutil.ToFloat64(m.requests.WithLabelValues("mcp", "POST", "200", "upstream", "search")); v != 2 {
		t.Errorf("requests tool=search = %v, want 2", v)
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("duration series = %d, want 2 (tool search and none)", n)
	}
	if a := testing.AllocsPerRun(1000, func() { m.Request("mcp", "POST", 200, "upstream", "search", time.Millisecond) }); a != 0 {
		t.Errorf("a tool request allocates %v times", a)
	}
}
