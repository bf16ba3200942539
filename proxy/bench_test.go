//go:build unix

package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// What breakwater costs per request over a bare httputil.ReverseProxy:
// both sit behind a real loopback listener, in front of the same loopback
// upstream answering 64 bytes, driven by one keep-alive client.
//
//	go test -run='^$' -bench='Bare|Pipeline' -benchmem -count=5 ./proxy/
//
// Besides ns/op (wall time, at the mercy of whatever else the machine
// runs) each reports cpu-ns/op: the process's user+system CPU time per
// request — client, proxy and upstream together, all in this process —
// which a busy machine disturbs far less.

var payload64 = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func benchUpstream(b *testing.B) *httptest.Server {
	b.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(payload64)
	}))
	b.Cleanup(s.Close)
	return s
}

// benchTransport is configured like transport.NewBase's net/http transport
// with an upstream's defaults.
func benchTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// drive sends b.N GETs through front with a keep-alive client; each
// answer must be size bytes.
func drive(b *testing.B, front string, size int) {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	get := func() {
		resp, err := c.Get(front + "/api/items")
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(size) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	for range 100 { // warm the connection pools (and a route's cache)
		get()
	}
	b.ReportAllocs()
	cpu0 := testkit.ProcessCPU()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
	b.StopTimer()
	b.ReportMetric(float64(testkit.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

func BenchmarkBare(b *testing.B) { benchBare(b, nil, false) }

// BenchmarkBarePooled is BenchmarkBare with the copy-buffer pool that
// breakwater gives its ReverseProxy: a plain ReverseProxy allocates 32 KiB
// per request, which is most of its B/op and some of its time.
func BenchmarkBarePooled(b *testing.B) { benchBare(b, &benchBuffers{}, false) }

// BenchmarkBareSameHeaders is BenchmarkBarePooled plus the headers SPEC.md
// requires of breakwater on every request (X-Forwarded-For/-Host/-Proto
// and X-Request-Id both ways): the fair baseline for what the policies
// themselves cost, since every header is allocated and parsed on both hops.
func BenchmarkBareSameHeaders(b *testing.B) { benchBare(b, &benchBuffers{}, true) }

// benchBare drives a bare httputil.ReverseProxy whose BufferPool is pool
// (nil: none) in front of the bench upstream; headers adds breakwater's
// mandatory headers.
func benchBare(b *testing.B, pool httputil.BufferPool, headers bool) {
	up := benchUpstream(b)
	target, _ := url.Parse(up.URL)
	tr := benchTransport()
	b.Cleanup(tr.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if headers {
				pr.SetXForwarded()
				pr.Out.Header["X-Request-Id"] = []string{"0123456789abcdef0123456789abcdef"}
			}
			pr.SetURL(target)
		},
		Transport:  tr,
		BufferPool: pool,
	}
	if headers {
		rp.ModifyResponse = func(r *http.Response) error {
			r.Header["X-Request-Id"] = []string{"0123456789abcdef0123456789abcdef"}
			return nil
		}
	}
	front := httptest.NewServer(rp)
	b.Cleanup(front.Close)
	drive(b, front.URL, len(payload64))
}

type benchBuffers struct{ p sync.Pool }

func (bp *benchBuffers) Get() []byte {
	if b, ok := bp.p.Get().(*[32 << 10]byte); ok {
		return b[:]
	}
	return make([]byte, 32<<10)
}

func (bp *benchBuffers) Put(b []byte) {
	if len(b) == 32<<10 {
		bp.p.Put((*[32 << 10]byte)(b))
	}
}

// pipelineConfig is BenchmarkPipeline's config: a route with every
// per-request policy on, to upstream.
func pipelineConfig(upstream string) string {
	return `
log: { access_log: true }
upstreams:
  api: { url: "` + upstream + `" }
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: api
    timeout: 10s
    retry: { attempts: 3, on: [connect_error, 502, 503, 504] }
    circuit_breaker: { failure_rate: 50%, min_requests: 20, window: 30s, delay: 10s }
    bulkhead: { max_concurrent: 100, max_wait: 0s }
`
}

// BenchmarkPipeline runs on the lean transport (the default for http://);
// BenchmarkPipelineStandard is the same on net/http's Transport, the path
// every https upstream takes; BenchmarkNoPolicies is the route with every
// policy off, on the lean transport: what the policies themselves cost.
func BenchmarkPipeline(b *testing.B) { benchPipeline(b, pipelineConfig) }

func BenchmarkPipelineStandard(b *testing.B) {
	benchPipeline(b, func(up string) string {
		return strings.Replace(pipelineConfig(up), `url: "`+up+`" }`, `url: "`+up+`", transport: standard }`, 1)
	})
}

func BenchmarkNoPolicies(b *testing.B) {
	benchPipeline(b, func(up string) string {
		return `
log: { access_log: true }
upstreams:
  api: { url: "` + up + `" }
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: api
    retry: off
    circuit_breaker: off
`
	})
}

func benchPipeline(b *testing.B, config func(upstream string) string) {
	b.Setenv("BREAKWATER_TRANSPORT", "") // the config says which transport
	up := benchUpstream(b)
	srv := proxy.New(zerolog.Nop(), observe.NewFanout(observe.NewMetrics("bench"), observe.NewHub()))
	text := config(up.URL)
	if !strings.Contains(text, up.URL) {
		b.Fatal("the config does not name the upstream")
	}
	cfg := e2eConfig(b, text)
	if err := srv.Load(cfg); err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(srv)
	b.Cleanup(front.Close)
	drive(b, front.URL, len(payload64))
}

// BenchmarkTracing is BenchmarkPipeline with and without a tracing block:
// "off" must cost what BenchmarkPipeline costs (no exporter, one nil
// check); "sampled" exports every request's spans (to a local receiver
// that discards them), "unsampled" (sample_ratio 0) still continues and
// forwards the traceparent.
//
//	go test -run='^$' -bench='Tracing' -benchmem ./proxy/
func BenchmarkTracing(b *testing.B) {
	for _, tc := range []struct{ name, block string }{
		{"off", ""},
		{"unsampled", "tracing: { otlp_endpoint: \"{{OTLP}}\", sample_ratio: 0 }\n"},
		{"sampled", "tracing: { otlp_endpoint: \"{{OTLP}}\", sample_ratio: 1 }\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
			b.Cleanup(sink.Close)
			up := benchUpstream(b)
			srv := proxy.New(zerolog.Nop(), observe.NewFanout(observe.NewMetrics("bench"), observe.NewHub()))
			cfg := e2eConfig(b, strings.ReplaceAll(tc.block, "{{OTLP}}", sink.URL)+pipelineConfig(up.URL))
			if err := srv.Load(cfg); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = srv.Close(context.Background()) })
			front := httptest.NewServer(srv)
			b.Cleanup(front.Close)
			drive(b, front.URL, len(payload64))
		})
	}
}
