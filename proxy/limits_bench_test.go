//go:build unix

package proxy_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// What a cache hit and a route rate limit cost, through a real loopback
// listener in front of a loopback upstream answering 1 KiB, driven by one
// keep-alive client (its cost is in every ns/op alike):
//
//	go test -run='^$' -bench='CacheHit|Proxied|RateLimit' -benchmem -count=5 ./proxy/
//
// The Handler variants call ServeHTTP directly with a recorder: the same
// work without the client's HTTP round trip to breakwater, which a hit
// cannot avoid and which dominates it.

var payload1K = bytes.Repeat([]byte("0123456789abcdef"), 64)

const benchRoute = `
upstreams:
  api: { url: "{{UP}}" }
routes:
  - name: api
    match: { path_prefix: /api/ }
    upstream: api
    timeout: 10s
`

func benchProxy(b *testing.B, extra string) (*proxy.Server, *httptest.Server) {
	b.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(payload1K)
	}))
	b.Cleanup(up.Close)
	srv := proxy.New(zerolog.Nop(), observe.NewFanout(observe.NewMetrics("t"), observe.NewHub()))
	yaml := strings.ReplaceAll(benchRoute+extra, "{{UP}}", up.URL)
	cfg, _, err := config.Parse("bench.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Load(cfg); err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(srv)
	b.Cleanup(front.Close)
	return srv, front
}

// driveHandler calls srv.ServeHTTP b.N times with a recorder.
func driveHandler(b *testing.B, srv *proxy.Server) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://breakwater/api/items", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	serve := func() {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req.Clone(req.Context()))
		if w.Code != 200 || w.Body.Len() != len(payload1K) {
			b.Fatalf("status %d, %d bytes", w.Code, w.Body.Len())
		}
	}
	for range 100 {
		serve()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve()
	}
}

const benchCache = `    cache: { ttl: 1h }
`

// A rate that never limits: the cost of keying, taking and the headers.
const benchRateLimit = `    rate_limit: { rate: 1000000000/1s, key: client_ip }
`

func BenchmarkCacheHit(b *testing.B) {
	_, front := benchProxy(b, benchCache)
	drive(b, front.URL, len(payload1K))
}

// BenchmarkLoopbackFloor is the client's round trip to a server that
// answers 1 KiB itself: what a hit costs at the very least.
func BenchmarkLoopbackFloor(b *testing.B) {
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(payload1K)
	}))
	b.Cleanup(front.Close)
	drive(b, front.URL, len(payload1K))
}

func BenchmarkProxied(b *testing.B) {
	_, front := benchProxy(b, "")
	drive(b, front.URL, len(payload1K))
}

func BenchmarkCacheHitHandler(b *testing.B) {
	srv, _ := benchProxy(b, benchCache)
	driveHandler(b, srv)
}

func BenchmarkProxiedHandler(b *testing.B) {
	srv, _ := benchProxy(b, "")
	driveHandler(b, srv)
}

func BenchmarkRateLimitClientIP(b *testing.B) {
	_, front := benchProxy(b, benchRateLimit)
	drive(b, front.URL, len(payload1K))
}

func BenchmarkNoRateLimit(b *testing.B) {
	_, front := benchProxy(b, "")
	drive(b, front.URL, len(payload1K))
}

// BenchmarkRateLimitOnHitHandler is BenchmarkCacheHitHandler with the
// non-limiting client_ip rate limit: the difference is what the limit
// costs per request (key, Take, headers), with no network to hide it.
func BenchmarkRateLimitOnHitHandler(b *testing.B) {
	srv, _ := benchProxy(b, benchCache+benchRateLimit)
	driveHandler(b, srv)
}
