package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// Issue 3's policies end to end: client → breakwater behind a real
// listener → upstream, where the proxy's own part matters (body buffering
// for replay, error kinds, fallback, shared breakers).

// e2e is a proxy.Server serving one config, with a client of its own.
type e2e struct {
	*httptest.Server
	srv    *proxy.Server
	client *http.Client
}

func e2eConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, _, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// startE2E serves yaml. Its cleanup loads an empty config, which closes
// the upstream transports' idle connections, and then checks that ups
// saw every connection closed: a response body left open would pin one.
func startE2E(t *testing.T, yaml string, ups ...*testkit.Upstream) *e2e {
	t.Helper()
	srv := proxy.New(zerolog.Nop(), observe.NewFanout(observe.NewMetrics("t"), observe.NewHub()))
	if err := srv.Load(e2eConfig(t, yaml)); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ts.Close()
		// A config with none of the old upstreams: their transports
		// close their idle connections.
		if err := srv.Load(e2eConfig(t, `
upstreams:
  e2e-unloaded: { url: "http://127.0.0.1:9" }
routes:
  - { name: e2e-unloaded, match: { path_prefix: / }, upstream: e2e-unloaded }
`)); err != nil {
			t.Errorf("unloading: %v", err)
		}
		for _, u := range ups {
			deadline := time.Now().Add(3 * time.Second)
			for u.OpenConns() != 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if open := u.OpenConns(); open != 0 {
				t.Errorf("%d upstream connections left open (%d opened)", open, u.NewConns.Load())
			}
		}
	})
	return &e2e{Server: ts, srv: srv, client: &http.Client{Transport: tr}}
}

func shaOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>10)
	}
	return b
}

func (p *e2e) send(t *testing.T, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, b
}

func TestSocketsBodiesOverMaxBodyAreSentOnceIntact(t *testing.T) {
	testkit.CheckLeaks(t)
	var mu sync.Mutex
	var sums []string
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		sums = append(sums, shaOf(b))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	p := startE2E(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, max_body: 1MiB, backoff: { initial: 1ms } }
`), u)
	for _, tc := range []struct {
		name     string
		size     int
		chunked  bool
		attempts int
	}{
		{"2MiB", 2 << 20, false, 1},
		{"2MiB chunked", 2 << 20, true, 1},
		{"512KiB is replayed", 512 << 10, false, 3},
		{"512KiB chunked is replayed", 512 << 10, true, 3},
	} {
		mu.Lock()
		sums = nil
		mu.Unlock()
		body := patterned(tc.size)
		var r io.Reader = bytes.NewReader(body)
		if tc.chunked {
			r = io.MultiReader(r) // no length: sent chunked
		}
		resp, _ := p.send(t, http.MethodPut, "/blob", r)
		mu.Lock()
		got := append([]string(nil), sums...)
		mu.Unlock()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Breakwater-Error") != "" {
			t.Errorf("%s: status %d %q, want the upstream's own 503", tc.name, resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
		}
		if len(got) != tc.attempts {
			t.Errorf("%s: %d attempts, want %d", tc.name, len(got), tc.attempts)
		}
		for i, s := range got {
			if s != shaOf(body) {
				t.Errorf("%s: attempt %d got sha256 %s, want %s", tc.name, i+1, s, shaOf(body))
			}
		}
	}
}

func TestSocketsPOSTToARefusingPortIsRetriedUntilItListens(t *testing.T) {
	testkit.CheckLeaks(t)
	addr := testkit.FreeAddr(t)
	body := patterned(256 << 10)
	got := make(chan string, 4)
	u := testkit.NewUnstartedUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- shaOf(b)
		w.WriteHeader(http.StatusCreated)
	})
	up := make(chan struct{})
	go func() {
		defer close(up)
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("re-listen on %s: %v", addr, err)
			return
		}
		u.Listener.Close()
		u.Listener = l
		u.Start()
	}()
	t.Cleanup(func() { <-up; u.Close() })
	// POST is not in retry.methods and application/octet-stream is not
	// JSON: the body is streamed, never buffered. A refused connection
	// proves nothing was sent, so the same body can still go.
	p := startE2E(t, testkit.OneRoute("http://"+addr, `
    retry: { attempts: 6, backoff: { initial: 100ms, max: 1s, multiplier: 2, jitter: 0 } }
`), u)
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/orders", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	elapsed := time.Since(start)
	t.Logf("POST through the proxy to a port that listens 300ms later: %d after %v", resp.StatusCode, elapsed.Round(time.Millisecond))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d (%s), want 201", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if elapsed < 300*time.Millisecond {
		t.Errorf("answered after %v, before the upstream listened", elapsed)
	}
	if s := <-got; s != shaOf(body) {
		t.Errorf("upstream got sha256 %s, want %s", s, shaOf(body))
	}
	if n := u.Hits.Load(); n != 1 {
		t.Errorf("upstream got the POST %d times, want 1", n)
	}
}

func TestSocketsUpstreamAnswersPassThroughWhenRetriesEnd(t *testing.T) {
	testkit.CheckLeaks(t)
	for _, tc := range []struct {
		name, retryAfter string
		status, attempts int
	}{
		{"attempts run out", "", http.StatusBadGateway, 3},
		{"Retry-After beyond the route timeout", "120", http.StatusServiceUnavailable, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Attempt", fmt.Sprint(n))
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, "upstream attempt %d", n)
			})
			p := startE2E(t, testkit.OneRoute(u.URL, `
    timeout: 5s
    retry: { attempts: 3, backoff: { initial: 1ms } }
`), u)
			start := time.Now()
			resp, body := p.send(t, http.MethodGet, "/", nil)
			elapsed := time.Since(start)
			want := fmt.Sprintf("upstream attempt %d", tc.attempts)
			if resp.StatusCode != tc.status || string(body) != want || resp.Header.Get("X-Attempt") != fmt.Sprint(tc.attempts) ||
				resp.Header.Get("Retry-After") != tc.retryAfter || resp.Header.Get("X-Breakwater-Error") != "" {
				t.Errorf("got %d %q X-Attempt=%q Retry-After=%q X-Breakwater-Error=%q, want the upstream's last answer",
					resp.StatusCode, body, resp.Header.Get("X-Attempt"), resp.Header.Get("Retry-After"), resp.Header.Get("X-Breakwater-Error"))
			}
			if n := u.Hits.Load(); n != int64(tc.attempts) {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
			if tc.retryAfter != "" {
				t.Logf("Retry-After 120 s with 5 s left reached the client in %v", elapsed)
				// Waiting for the Retry-After would spend the route's 5 s:
				// half of it tells the two apart on any machine.
				if elapsed > 5*time.Second/2 {
					t.Errorf("took %v, want at once, not the route's 5 s timeout spent waiting", elapsed)
				}
			}
		})
	}
}

func TestSocketsRouteTimeoutIs504(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	p := startE2E(t, testkit.OneRoute(u.URL, `
    timeout: 200ms
    retry: { attempts: 3, on: [timeout, 503] }
`), u)
	resp, _ := p.send(t, http.MethodGet, "/", nil)
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Breakwater-Error") != "timeout" {
		t.Errorf("got %d %q, want 504 timeout", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
}

func TestSocketsOpenBreakerAnswersCircuitOpenAtOnce(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	p := startE2E(t, testkit.OneRoute(u.URL, `
    retry: off
    circuit_breaker: { failure_threshold: 3, delay: 10s, half_open_requests: 1, success_threshold: 1 }
`), u)
	for i := 0; i < 3; i++ {
		if resp, _ := p.send(t, http.MethodGet, "/", nil); resp.StatusCode != 500 {
			t.Fatalf("got %d, want the upstream's 500", resp.StatusCode)
		}
	}
	resp, body := p.send(t, http.MethodGet, "/", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Fatalf("got %d %q, want 503 circuit_open", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "10" {
		t.Errorf("Retry-After %q, want 10 (seconds until half-open)", ra)
	}
	if !strings.Contains(string(body), "circuit_open") {
		t.Errorf("body %s does not name circuit_open", body)
	}
	// The proxy's own time for a rejection, without the network: the
	// handler called directly.
	const n = 200
	var total time.Duration
	for i := 0; i < n; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		start := time.Now()
		p.srv.ServeHTTP(rec, req)
		total += time.Since(start)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("got %d, want 503", rec.Code)
		}
	}
	avg := total / n
	t.Logf("open breaker: proxy-side time of a circuit_open rejection %v on average over %d", avg, n)
	// A speed figure belongs in a benchmark (issue 11, defect 13): the
	// pass mark is only that a rejection waits for nothing (no upstream,
	// no timer), which a loaded machine cannot stretch to 50 ms.
	if avg > 50*time.Millisecond {
		t.Errorf("a rejection takes %v on average: it waited for something", avg)
	}
	if h := u.Hits.Load(); h != 3 {
		t.Errorf("upstream saw %d requests, want 3: nothing is sent while open", h)
	}
}

func TestSocketsUpstreamBreakerIsSharedByItsRoutes(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	p := startE2E(t, `
upstreams:
  up:
    url: "`+u.URL+`"
    circuit_breaker: { failure_threshold: 2, delay: 10s }
routes:
  - { name: a, match: { path_prefix: /a/ }, upstream: up, retry: off }
  - { name: b, match: { path_prefix: /b/ }, upstream: up, retry: off }
`, u)
	for i := 0; i < 2; i++ {
		if resp, _ := p.send(t, http.MethodGet, "/a/x", nil); resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Breakwater-Error") != "" {
			t.Fatalf("route a: %d %q, want the upstream's 502", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
		}
	}
	resp, _ := p.send(t, http.MethodGet, "/b/x", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Errorf("route b after route a opened the upstream breaker: %d %q, want 503 circuit_open", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if h := u.Hits.Load(); h != 2 {
		t.Errorf("upstream saw %d requests, want 2", h)
	}
	bs := p.srv.Live().Breakers
	if len(bs) != 1 || bs[0].Name != "up" || bs[0].Scope != "upstream" || bs[0].State() != "open" {
		t.Errorf("breakers %+v, want one open upstream breaker named up", bs)
	}
}

func TestSocketsFallbackAnswersWhenThePipelineFails(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500":
			w.WriteHeader(http.StatusInternalServerError)
		case "/slow":
			<-r.Context().Done()
		default:
			_, _ = io.WriteString(w, "live")
		}
	})
	const fallback = `
    fallback: { status: 200, content_type: application/json, body: '{"items":[],"stale":true}' }
`
	p := startE2E(t, `
upstreams:
  up: { url: "`+u.URL+`" }
  dead: { url: "`+fmt.Sprintf("http://%s", testkit.FreeAddr(t))+`" }
routes:
  - name: dead
    match: { path_prefix: /dead }
    upstream: dead
    retry: { attempts: 2, backoff: { initial: 1ms } }`+fallback+`
  - name: slow
    match: { path_prefix: /slow }
    upstream: up
    timeout: 100ms`+fallback+`
  - name: open
    match: { path_prefix: /open }
    upstream: up
    retry: off
    circuit_breaker: { failure_threshold: 1, delay: 10s }`+fallback+`
  - name: live
    match: { path_prefix: / }
    upstream: up
    retry: off`+fallback, u)
	check := func(path string, wantBody string) {
		t.Helper()
		resp, body := p.send(t, http.MethodGet, path, nil)
		if resp.StatusCode != 200 || string(body) != wantBody {
			t.Errorf("%s: %d %q, want 200 %q", path, resp.StatusCode, body, wantBody)
		}
		if wantBody != "live" && resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Type %q", path, resp.Header.Get("Content-Type"))
		}
	}
	const fb = `{"items":[],"stale":true}`
	check("/dead/x", fb) // connection refused on every attempt
	check("/slow", fb)   // the route timeout
	check("/500", fb)    // an upstream 5xx
	check("/ok", "live") // a good answer is not replaced
	forceBreaker(t, p.srv, "open", policy.Open)
	before := u.Hits.Load()
	check("/open/x", fb) // breaker open
	if u.Hits.Load() != before {
		t.Error("an open breaker let a request through")
	}
}

func TestSocketsResetsBeforeAndAfterHeaders(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		if r.URL.Path == "/mid-body" {
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
			_ = buf.Flush()
		}
		_ = conn.(*net.TCPConn).SetLinger(0) // a reset, not a clean close
		conn.Close()
	})
	p := startE2E(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, backoff: { initial: 1ms } }
`), u)
	// Before headers: retried (GET is idempotent), then 502 upstream_unreachable.
	resp, _ := p.send(t, http.MethodGet, "/before-headers", nil)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Breakwater-Error") != "upstream_unreachable" {
		t.Errorf("reset before headers: %d %q, want 502 upstream_unreachable", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if h := u.Hits.Load(); h != 3 {
		t.Errorf("reset before headers: %d attempts, want 3", h)
	}
	// After headers: the client never gets a whole answer (the proxy
	// aborts the response; whether the status got out first depends on
	// buffering), and nothing is retried.
	// A fresh connection: on a reused one, the client's own transport
	// would resend a GET that got no answer.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/mid-body", nil)
	if r2, err := fresh.Do(req); err == nil {
		b, err := io.ReadAll(r2.Body)
		r2.Body.Close()
		if err == nil {
			t.Errorf("reset mid-body: got a whole %d answer of %d bytes, want a broken one", r2.StatusCode, len(b))
		}
	}
	if h := u.Hits.Load(); h != 4 {
		t.Errorf("reset mid-body: %d attempts in all, want 4 (no retry once headers are out)", h-3)
	}
}
