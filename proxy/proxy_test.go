package proxy

// End-to-end tests of the data plane: a Server loaded from YAML behind a
// real listener, real upstreams (httptest, go-httpbin), real clients.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mccutchen/go-httpbin/v2/httpbin"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
)

// randomBytes is n bytes that differ from run to run but not within one.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = r.Read(b)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// onlyReader hides a reader's type so that net/http cannot learn its
// length: the request goes out chunked.
type onlyReader struct{ io.Reader }

func TestBodiesPassThroughByteForByte(t *testing.T) {
	download := randomBytes(6 << 20)
	// The upstream echoes what it received, with its hash, length and
	// transfer encoding; a GET without a body gets download.
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Got-Sha256", sha(body))
		w.Header().Set("X-Got-Length", fmt.Sprint(len(body)))
		w.Header().Set("X-Got-Chunked", fmt.Sprint(r.ContentLength == -1))
		if r.Method == http.MethodGet && len(body) == 0 {
			_, _ = w.Write(download)
			return
		}
		_, _ = w.Write(body)
	})
	p := startProxy(t, `
server: { max_body: 64MiB }
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: up
`, map[string]string{"UP": up.URL})

	t.Run("download", func(t *testing.T) {
		resp, body := p.get(t, "/download")
		if resp.StatusCode != http.StatusOK || sha(body) != sha(download) {
			t.Fatalf("GET: status %d, %d bytes, sha256 %s; want 200, %d bytes, %s", resp.StatusCode, len(body), sha(body), len(download), sha(download))
		}
	})
	cases := []struct {
		name    string
		method  string
		size    int
		chunked bool
	}{
		{"POST 6MiB", http.MethodPost, 6 << 20, false},
		{"PUT 6MiB (too large to replay, streamed)", http.MethodPut, 6 << 20, false},
		{"PUT 300KiB (buffered for replay)", http.MethodPut, 300 << 10, false},
		{"POST 6MiB chunked", http.MethodPost, 6 << 20, true},
		{"PUT 5MiB chunked (part buffered, rest streamed)", http.MethodPut, 5 << 20, true},
		{"PUT 100KiB chunked (buffered)", http.MethodPut, 100 << 10, true},
		{"GET with a 100KiB body", http.MethodGet, 100 << 10, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sent := randomBytes(tc.size)
			var body io.Reader = bytes.NewReader(sent)
			if tc.chunked {
				body = onlyReader{body}
			}
			req := newRequest(t, tc.method, p.URL+"/upload", body)
			if tc.chunked {
				req.ContentLength = -1
			}
			resp, got := do(t, p.Client(), req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			if h := resp.Header.Get("X-Got-Sha256"); h != sha(sent) {
				t.Errorf("upstream received %s bytes with sha256 %s; want %d bytes, %s", resp.Header.Get("X-Got-Length"), h, len(sent), sha(sent))
			}
			if sha(got) != sha(sent) {
				t.Errorf("client received %d bytes with sha256 %s; want %d bytes, %s", len(got), sha(got), len(sent), sha(sent))
			}
		})
	}
}

// sseEvents reads events from an SSE stream and records when each arrived.
func sseEvents(r io.Reader, start time.Time) (events []string, at []time.Duration) {
	sc := bufio.NewScanner(r)
	var cur []string
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			cur = append(cur, line)
			continue
		}
		if len(cur) > 0 {
			events = append(events, strings.Join(cur, "\n"))
			at = append(at, time.Since(start))
			cur = nil
		}
	}
	return events, at
}

func TestSSEEventsAreFlushedOneByOne(t *testing.T) {
	const n, gap = 5, 200 * time.Millisecond
	var sent [n]atomic.Int64 // when the upstream sent each event, in Unix ns
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range n {
			sent[i].Store(time.Now().UnixNano())
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			if err := rc.Flush(); err != nil {
				return
			}
			if i < n-1 {
				select {
				case <-time.After(gap):
				case <-r.Context().Done():
					return
				}
			}
		}
	})
	p := startProxy(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: events
    match: { path_prefix: / }
    upstream: up
`, map[string]string{"UP": up.URL})

	// The bar: each event reaches the client before the upstream sends
	// the next, gap later; one held back even until then was not flushed
	// as it came. The best of three tries is judged so that one scheduling
	// hiccup under -race does not fail it.
	ahead := false
	best := -time.Hour // the least time by which an event beat the next one's sending, at best
	for try := 0; try < 3 && !ahead; try++ {
		start := time.Now()
		resp, err := p.Client().Get(p.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		events, at := sseEvents(resp.Body, start)
		resp.Body.Close()
		if len(events) != n {
			t.Fatalf("got %d events, want %d: %q", len(events), n, events)
		}
		for i, e := range events {
			if want := fmt.Sprintf("id: %d\ndata: event %d", i, i); e != want {
				t.Errorf("event %d = %q, want %q", i, e, want)
			}
		}
		// One by one: event i arrives after the upstream slept i gaps,
		// not all together when the stream ends.
		for i := 1; i < n; i++ {
			if earliest := time.Duration(i)*gap - gap/2; at[i] < earliest {
				t.Errorf("event %d arrived at %s, before the upstream could have sent it (%s): arrivals %v", i, at[i], earliest, at)
			}
		}
		if at[0] >= at[n-1]-2*gap {
			t.Errorf("first event arrived at %s, with the stream's end at %s: it was held back", at[0], at[n-1])
		}
		lead := time.Hour
		for i := range n - 1 {
			lead = min(lead, time.Unix(0, sent[i+1].Load()).Sub(start.Add(at[i])))
		}
		ahead, best = lead > 0, max(best, lead)
		t.Logf("try %d: first event after %s; every event arrived at least %s before the next was sent; arrivals %v", try+1, at[0], lead, at)
	}
	if !ahead {
		t.Errorf("an event arrived %s after the upstream sent the next one, at best: it was held back", -best)
	}
}

func TestWebSocketEchoHoldsTheBulkheadSlot(t *testing.T) {
	up := httptest.NewServer(httpbin.New())
	t.Cleanup(up.Close)
	p := startProxy(t, `
upstreams:
  bin: { url: "{{UP}}" }
routes:
  - name: ws
    match: { path_prefix: / }
    upstream: bin
    bulkhead: { max_concurrent: 1, max_wait: 0s }
`, map[string]string{"UP": up.URL})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(p.URL, "http")+"/websocket/echo", nil)
	if err != nil {
		t.Fatalf("dial through the proxy: %v", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"hello", strings.Repeat("big ", 10000)} {
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		typ, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ != websocket.MessageText || string(got) != msg {
			t.Fatalf("echo = %v %.40q, want text %.40q", typ, got, msg)
		}
	}

	// The socket holds the only slot: a plain request is turned away.
	resp2, body := p.get(t, "/get")
	if resp2.StatusCode != http.StatusServiceUnavailable || resp2.Header.Get("X-Breakwater-Error") != "bulkhead_full" {
		t.Fatalf("while the socket is open: %d %q %s; want 503 bulkhead_full", resp2.StatusCode, resp2.Header.Get("X-Breakwater-Error"), body)
	}
	if v := testkit.SumMetric(t, p.metrics.Registry, "breakwater_bulkhead_in_flight", map[string]string{"route": "ws"}); v != 1 {
		t.Errorf("breakwater_bulkhead_in_flight = %v while the socket is open, want 1", v)
	}

	if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the slot to be released after the socket closed", func() bool {
		resp, _ := p.get(t, "/get")
		return resp.StatusCode == http.StatusOK
	})
}

func TestH2CUpgradeIsRefused(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = io.WriteString(w, "plain")
	})
	p := startProxy(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: up
`, map[string]string{"UP": up.URL})

	// A raw connection: Go's client would not send an h2c upgrade as is.
	conn, err := net.Dial("tcp", p.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /h2c HTTP/1.1\r\nHost: proxy.test\r\n"+
		"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "plain" {
		t.Fatalf("client got %d %q, want 200 \"plain\" (no 101)", resp.StatusCode, body)
	}
	h := <-seen
	for _, name := range []string{"Upgrade", "Http2-Settings"} {
		if v := h.Values(name); len(v) > 0 {
			t.Errorf("upstream got %s: %q", name, v)
		}
	}
	for _, v := range h.Values("Connection") {
		if l := strings.ToLower(v); strings.Contains(l, "upgrade") || strings.Contains(l, "http2-settings") {
			t.Errorf("upstream got Connection: %q", v)
		}
	}
}

// headerEcho answers with the request's headers as JSON, and with
// hop-by-hop headers of its own that must not reach the client.
func headerEcho(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set("Host", r.Host)
	w.Header().Set("Connection", "X-Upstream-Hop")
	w.Header().Set("X-Upstream-Hop", "secret")
	w.Header().Set("Keep-Alive", "timeout=5")
	w.Header().Set("Proxy-Authenticate", "Basic")
	w.Header().Set("X-End-To-End", "kept")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(h)
}

func TestHopByHopHeadersAndForwardedFor(t *testing.T) {
	up := startUpstream(t, headerEcho)
	const yaml = `
server: { trusted_proxies: [{{TRUSTED}}] }
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: up
`
	untrusted := startProxy(t, yaml, map[string]string{"UP": up.URL, "TRUSTED": "10.0.0.0/8"})
	trusted := startProxy(t, yaml, map[string]string{"UP": up.URL, "TRUSTED": "127.0.0.0/8"})

	send := func(t *testing.T, p *testProxy, h map[string]string) (http.Header, http.Header) {
		t.Helper()
		req := newRequest(t, http.MethodGet, p.URL+"/headers", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, body := do(t, p.Client(), req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var got http.Header
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return got, resp.Header
	}

	t.Run("both ways", func(t *testing.T) {
		got, respHeader := send(t, untrusted, map[string]string{
			"Connection":       "X-Forwarded-For, X-Client-Hop",
			"X-Client-Hop":     "1",
			"X-Forwarded-For":  "6.6.6.6",
			"Keep-Alive":       "300",
			"Proxy-Connection": "keep-alive",
			"X-End-To-End":     "kept",
		})
		for _, h := range []string{"X-Client-Hop", "Keep-Alive", "Proxy-Connection", "Connection"} {
			if v := got.Values(h); len(v) > 0 {
				t.Errorf("upstream got hop-by-hop %s: %q", h, v)
			}
		}
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("upstream got X-Forwarded-For %q, want only the client's IP 127.0.0.1", v)
		}
		if got.Get("X-End-To-End") != "kept" {
			t.Errorf("upstream lost an end-to-end header: %v", got)
		}
		for _, h := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"} {
			if v := respHeader.Values(h); len(v) > 0 {
				t.Errorf("client got the upstream's hop-by-hop %s: %q", h, v)
			}
		}
		if respHeader.Get("X-End-To-End") != "kept" {
			t.Errorf("client lost an end-to-end response header: %v", respHeader)
		}
	})

	t.Run("spoofed from an untrusted peer", func(t *testing.T) {
		got, _ := send(t, untrusted, map[string]string{
			"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil.test", "X-Forwarded-Proto": "https",
		})
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want [127.0.0.1]", v)
		}
		if v := got.Get("X-Forwarded-Host"); v == "evil.test" {
			t.Errorf("X-Forwarded-Host = %q: the spoofed value was kept", v)
		}
		if v := got.Get("X-Forwarded-Proto"); v != "http" {
			t.Errorf("X-Forwarded-Proto = %q, want http", v)
		}
	})

	t.Run("kept from a trusted proxy", func(t *testing.T) {
		got, _ := send(t, trusted, map[string]string{
			"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Proto": "https",
		})
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "203.0.113.7, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want [\"203.0.113.7, 127.0.0.1\"]", v)
		}
		if v := got.Get("X-Forwarded-Host"); v != "app.example.com" {
			t.Errorf("X-Forwarded-Host = %q, want app.example.com", v)
		}
		if v := got.Get("X-Forwarded-Proto"); v != "https" {
			t.Errorf("X-Forwarded-Proto = %q, want https", v)
		}
	})

	t.Run("named hop-by-hop by a trusted proxy", func(t *testing.T) {
		got, _ := send(t, trusted, map[string]string{"X-Forwarded-For": "203.0.113.7", "Connection": "X-Forwarded-For"})
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want [127.0.0.1]", v)
		}
	})
}

func TestHTTPSUpstreamHostSNIAndHTTP2(t *testing.T) {
	type seen struct {
		host, sni  string
		protoMajor int
	}
	got := make(chan seen, 1)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.TLS.ServerName, r.ProtoMajor}
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, `
upstreams:
  by-ip: { url: "{{UP}}", tls: { ca_file: "{{CA}}" } }
  named:
    url: "{{UP}}"
    host_header: client
    tls: { ca_file: "{{CA}}", server_name: example.com }
  insecure: { url: "{{UP}}", tls: { insecure_skip_verify: true } }
routes:
  - { name: by-ip, match: { path_prefix: /ip/ }, upstream: by-ip }
  - { name: named, match: { path_prefix: /named/ }, upstream: named }
  - { name: insecure, match: { path_prefix: /insecure/ }, upstream: insecure }
`, map[string]string{"UP": up.URL, "CA": ca})
	upHost := strings.TrimPrefix(up.URL, "https://")

	cases := []struct {
		path string
		want seen
	}{
		// An IP address is verified against the certificate's IP SAN and
		// sent with no SNI; the Host is the upstream's.
		{"/ip/x", seen{host: upHost, sni: "", protoMajor: 2}},
		// host_header: client passes the client's Host; SNI stays the
		// configured server_name.
		{"/named/x", seen{host: "api.client.test", sni: "example.com", protoMajor: 2}},
		{"/insecure/x", seen{host: upHost, sni: "", protoMajor: 2}},
	}
	for _, tc := range cases {
		req := newRequest(t, http.MethodGet, p.URL+tc.path, nil)
		req.Host = "api.client.test"
		resp, body := do(t, p.Client(), req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.path, resp.StatusCode, body)
		}
		if s := <-got; s != tc.want {
			t.Errorf("%s: upstream saw %+v, want %+v", tc.path, s, tc.want)
		}
	}
}

func TestPathsStripPrefixAndUpstreamBasePath(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.RequestURI())
	})
	p := startProxy(t, `
upstreams:
  slash: { url: "{{UP}}/base/" }
  noslash: { url: "{{UP}}/base" }
  root: { url: "{{UP}}" }
routes:
  - { name: api, match: { path_prefix: /api/ }, upstream: slash, strip_prefix: /api }
  - { name: v2, match: { path_prefix: /v2/ }, upstream: noslash, strip_prefix: /v2/ }
  - { name: keep, match: { path_prefix: /keep/ }, upstream: root }
  - { name: exact, match: { path: /health }, upstream: noslash, strip_prefix: /health }
`, map[string]string{"UP": up.URL})

	cases := []struct{ path, want string }{
		{"/api/users/7?x=1&y=2", "/base/users/7?x=1&y=2"},
		{"/api/", "/base/"},
		{"/v2/items", "/base/items"},
		{"/keep/a/b", "/keep/a/b"},
		{"/health", "/base/"},
		{"/api//users", "/base/users"},
		{"/api/a/./b/../c", "/base/a/c"},
		// The client's escaping passes through as sent; an escaped slash
		// in particular stays escaped: decoding it would change which
		// resource the upstream serves.
		{"/api/%41bc", "/base/%41bc"},
		{"/api/a%2Fb", "/base/a%2Fb"},
		{"/v2/a%2Fb/c", "/base/a%2Fb/c"},
		{"/keep/a%2Fb", "/keep/a%2Fb"},
		{"/api/a%20b", "/base/a%20b"},
	}
	for _, tc := range cases {
		resp, body := p.get(t, tc.path)
		if resp.StatusCode != http.StatusOK || string(body) != tc.want {
			t.Errorf("GET %s: upstream saw %d %q, want %q", tc.path, resp.StatusCode, body, tc.want)
		}
	}
	// Dot segments are resolved before matching: /api/../admin is /admin,
	// which no route matches; it must not reach the upstream's /base/admin.
	resp, body := p.get(t, "/api/../admin")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /api/../admin: %d %q, want 404", resp.StatusCode, body)
	}
}

func TestRouteMatchingFirstMatchWins(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Which"))
	})
	p := startProxy(t, `
upstreams:
  a: { url: "{{UP}}", headers: { set: { X-Which: exact } } }
  b: { url: "{{UP}}", headers: { set: { X-Which: writes } } }
  c: { url: "{{UP}}", headers: { set: { X-Which: by-host } } }
  d: { url: "{{UP}}", headers: { set: { X-Which: by-header } } }
  e: { url: "{{UP}}", headers: { set: { X-Which: rest } } }
routes:
  - { name: exact, match: { path: /exact }, upstream: a }
  - { name: writes, match: { path_prefix: /api/, methods: [POST, PUT] }, upstream: b }
  - { name: by-host, match: { path_prefix: /api/, host: API.example.com }, upstream: c }
  - { name: by-header, match: { path_prefix: /api/, headers: { x-tenant: acme } }, upstream: d }
  - { name: rest, match: { path_prefix: /api/ }, upstream: e }
`, map[string]string{"UP": up.URL})

	cases := []struct {
		method, path, host string
		header             map[string]string
		want               string // "" = 404
	}{
		{"GET", "/exact", "", nil, "exact"},
		{"GET", "/exact/more", "", nil, ""},
		{"GET", "/exac", "", nil, ""},
		{"POST", "/api/x", "api.example.com", map[string]string{"X-Tenant": "acme"}, "writes"},
		{"GET", "/api/x", "api.example.com", map[string]string{"X-Tenant": "acme"}, "by-host"},
		{"GET", "/api/x", "api.example.com:8080", nil, "by-host"},
		{"GET", "/api/x", "other.example.com", map[string]string{"X-Tenant": "acme"}, "by-header"},
		{"GET", "/api/x", "", map[string]string{"X-Tenant": "acme-2"}, "rest"},
		{"DELETE", "/api/x", "", nil, "rest"},
		{"GET", "/apix", "", nil, ""},
		{"GET", "/", "", nil, ""},
	}
	for _, tc := range cases {
		req := newRequest(t, tc.method, p.URL+tc.path, nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, body := do(t, p.Client(), req)
		switch {
		case tc.want == "" && resp.StatusCode != http.StatusNotFound:
			t.Errorf("%s %s host=%q %v: %d %q, want 404", tc.method, tc.path, tc.host, tc.header, resp.StatusCode, body)
		case tc.want != "" && (resp.StatusCode != http.StatusOK || string(body) != tc.want):
			t.Errorf("%s %s host=%q %v: %d %q, want route %s", tc.method, tc.path, tc.host, tc.header, resp.StatusCode, body, tc.want)
		}
	}
}

func TestErrorKindsAndForms(t *testing.T) {
	// Uploads counted by method: a streamed POST of an earlier case may
	// reach the upstream's handler after its client has its 413.
	var posts, puts atomic.Int32
	uploads := func(method string) *atomic.Int32 {
		if method == http.MethodPut {
			return &puts
		}
		return &posts
	}
	counted := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		uploads(r.Method).Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	slow := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: net/http notices a closed connection (and
		// cancels r.Context) only once the body is consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	p := startProxy(t, `
server: { max_body: 1KiB }
upstreams:
  counted: { url: "{{COUNTED}}" }
  slow: { url: "{{SLOW}}" }
  dead: { url: "{{DEAD}}" }
routes:
  - { name: upload, match: { path_prefix: /upload/ }, upstream: counted }
  - { name: slow, match: { path_prefix: /slow/ }, upstream: slow, timeout: 300ms }
  - name: dead
    match: { path_prefix: /dead/ }
    upstream: dead
    retry: { attempts: 2, backoff: { initial: 10ms, max: 20ms } }
  - { name: dead-problem, match: { path_prefix: /dead-problem/ }, upstream: dead, retry: off, errors: problem }
`, map[string]string{"COUNTED": counted.URL, "SLOW": slow.URL, "DEAD": testkit.DeadURL(t)})

	const (
		rpcCall         = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`
		rpcCallStringID = `{"jsonrpc":"2.0","id":"abc","method":"tools/list"}`
		rpcBatch        = `[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]`
		rpcNotification = `{"jsonrpc":"2.0","method":"notifications/initialized"}`
	)
	big := strings.Repeat("x", 4<<10)
	cases := []struct {
		name         string
		method, path string
		body         string
		chunked      bool
		json         bool
		status       int
		kind         string
		route        string
		rpcErr       int    // 0 = the problem form
		rawID        string // the id the JSON-RPC reply must carry, as JSON
	}{
		{name: "no route", method: "GET", path: "/nowhere", status: 404, kind: "no_route"},
		{name: "no route, JSON-RPC", method: "POST", path: "/nowhere", body: rpcCall, json: true, status: 404, kind: "no_route", rpcErr: -31404, rawID: "7"},
		{name: "no route, JSON-RPC over max_body", method: "POST", path: "/nowhere", body: `{"jsonrpc":"2.0","id":7,"method":"x","params":"` + big + `"}`, json: true, status: 404, kind: "no_route"},
		{name: "Content-Length over max_body", method: "POST", path: "/upload/", body: big, status: 413, kind: "body_too_large", route: "upload"},
		{name: "chunked over max_body", method: "POST", path: "/upload/", body: big, chunked: true, status: 413, kind: "body_too_large", route: "upload"},
		{name: "chunked over max_body, replayable", method: "PUT", path: "/upload/", body: big, chunked: true, status: 413, kind: "body_too_large", route: "upload"},
		{name: "route timeout", method: "GET", path: "/slow/", status: 504, kind: "timeout", route: "slow"},
		{name: "route timeout, JSON-RPC", method: "POST", path: "/slow/", body: rpcCall, json: true, status: 504, kind: "timeout", route: "slow", rpcErr: -31504, rawID: "7"},
		{name: "dead upstream", method: "GET", path: "/dead/", status: 502, kind: "upstream_unreachable", route: "dead"},
		{name: "dead upstream, JSON-RPC", method: "POST", path: "/dead/", body: rpcCallStringID, json: true, status: 502, kind: "upstream_unreachable", route: "dead", rpcErr: -31503, rawID: `"abc"`},
		{name: "JSON-RPC batch, refused", method: "POST", path: "/dead/", body: rpcBatch, json: true, status: 400, kind: "bad_request", route: "dead", rpcErr: -32600, rawID: "null"},
		{name: "dead upstream, JSON-RPC notification", method: "POST", path: "/dead/", body: rpcNotification, json: true, status: 502, kind: "upstream_unreachable", route: "dead"},
		{name: "dead upstream, errors: problem", method: "POST", path: "/dead-problem/", body: rpcCall, json: true, status: 502, kind: "upstream_unreachable", route: "dead-problem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = onlyReader{body}
			}
			req := newRequest(t, tc.method, p.URL+tc.path, body)
			if tc.chunked {
				req.ContentLength = -1
			}
			if tc.json {
				req.Header.Set("Content-Type", "application/json")
			}
			before := uploads(tc.method).Load()
			resp, raw := do(t, p.Client(), req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if k := resp.Header.Get("X-Breakwater-Error"); k != tc.kind {
				t.Errorf("X-Breakwater-Error = %q, want %q", k, tc.kind)
			}
			id := resp.Header.Get("X-Request-Id")
			if !saneID(id) {
				t.Errorf("X-Request-Id = %q", id)
			}
			// Only a chunked body that is streamed (not buffered for replay)
			// can reach the upstream before it is found too large.
			if tc.kind == "body_too_large" && !(tc.chunked && tc.method == http.MethodPost) && uploads(tc.method).Load() != before {
				t.Errorf("the upstream was contacted for a body known to be over max_body before sending")
			}
			if tc.rpcErr != 0 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				var r rpcReply
				if err := json.Unmarshal(raw, &r); err != nil {
					t.Fatalf("%v: %s", err, raw)
				}
				if r.JSONRPC != "2.0" || string(r.ID) != tc.rawID || r.Error.Code != tc.rpcErr ||
					r.Error.Data.Kind != tc.kind || r.Error.Data.RequestID != id || r.Error.Message == "" {
					t.Errorf("JSON-RPC reply %s; want id %s, code %d, data.kind %s, data.request_id %s", raw, tc.rawID, tc.rpcErr, tc.kind, id)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			var pb problem
			if err := json.Unmarshal(raw, &pb); err != nil {
				t.Fatalf("%v: %s", err, raw)
			}
			want := problem{
				Type: "https://breakwater.dev/errors/" + tc.kind, Title: titles[Kind(tc.kind)], Status: tc.status,
				Detail: details[Kind(tc.kind)], Route: tc.route, RequestID: id,
			}
			if pb.Title == "" || pb.Detail == "" || pb.Type != want.Type || pb.Title != want.Title || pb.Status != want.Status ||
				pb.Detail != want.Detail || pb.Route != want.Route || pb.RequestID != want.RequestID || pb.RetryAfter != nil {
				t.Errorf("problem %s\nwant %+v", raw, want)
			}
		})
	}
}

// A client that streams more than max_body gets 413; the upstream is not
// at fault, so the breaker must not count it.
func TestOversizedUploadsDoNotTripTheBreaker(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	p := startProxy(t, `
server: { max_body: 1KiB }
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: uploads
    match: { path_prefix: / }
    upstream: up
    circuit_breaker: { failure_threshold: 2, on: [connect_error, timeout, 5xx] }
`, map[string]string{"UP": up.URL})

	for range 3 {
		req := newRequest(t, http.MethodPost, p.URL+"/upload", onlyReader{strings.NewReader(strings.Repeat("x", 4<<10))})
		req.ContentLength = -1
		resp, body := do(t, p.Client(), req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized chunked upload: %d %s, want 413", resp.StatusCode, body)
		}
	}
	for _, br := range p.srv.Live().Breakers {
		if b := br.Status(); b.State != policy.Closed || b.Failures != 0 {
			t.Errorf("breaker %+v after three oversized uploads; want closed with no failures", b)
		}
	}
	if resp, body := p.get(t, "/after"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET after the uploads: %d %s, want 200", resp.StatusCode, body)
	}
}

func TestRequestID(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Request-Id"))
	})
	p := startProxy(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - { name: all, match: { path_prefix: / }, upstream: up }
`, map[string]string{"UP": up.URL})

	cases := []struct {
		name, sent string
		kept       bool
	}{
		{"sane", "req-123.abc:DEF/x+y=", true},
		{"longest sane", strings.Repeat("a", 128), true},
		{"absent", "", false},
		{"too long", strings.Repeat("a", 129), false},
		{"spaces", "two words", false},
		{"quotes", `"quoted"`, false},
		{"non-ASCII", "idé", false},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, p.URL+"/", nil)
			if tc.sent != "" {
				req.Header.Set("X-Request-Id", tc.sent)
			}
			resp, body := do(t, p.Client(), req)
			returned, upstreamSaw := resp.Header.Get("X-Request-Id"), string(body)
			if returned != upstreamSaw {
				t.Errorf("returned %q, but the upstream saw %q", returned, upstreamSaw)
			}
			if tc.kept && returned != tc.sent {
				t.Errorf("returned %q, want the client's %q", returned, tc.sent)
			}
			if !tc.kept {
				if returned == tc.sent || len(returned) != 32 || !saneID(returned) {
					t.Errorf("returned %q, want a new 32-character id", returned)
				}
				if seen[returned] {
					t.Errorf("id %q generated twice", returned)
				}
				seen[returned] = true
			}
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	var hits atomic.Int32
	started, cancelled := make(chan string, 1), make(chan string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			return
		case "/stream":
			// Headers and a first event, then nothing until the client leaves.
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: first\n\n")
			_ = http.NewResponseController(w).Flush()
		}
		hits.Add(1)
		started <- r.URL.Path
		select {
		case <-r.Context().Done():
			cancelled <- r.URL.Path
		case <-time.After(10 * time.Second):
		}
	})
	p := startProxy(t, `
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: slow
    match: { path_prefix: / }
    upstream: up
    timeout: 20s
    retry: { attempts: 3, on: [connect_error, timeout, 502, 503, 504] }
    circuit_breaker: { failure_threshold: 1, on: [connect_error, timeout, 5xx] }
`, map[string]string{"UP": up.URL})

	// leave sends a request, waits until the upstream has it, then leaves:
	// before the response headers, or after the first event of a stream.
	leave := func(t *testing.T, path, id string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req := newRequest(t, http.MethodGet, p.URL+path, nil).WithContext(ctx)
		req.Header.Set("X-Request-Id", id)
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := p.Client().Do(req)
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			if line != "data: first\n" {
				t.Errorf("stream began with %q", line)
			}
			resp.Body.Close() // an HTTP/1.1 body closed early closes the connection
		}()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the request never reached the upstream")
		}
		if path != "/stream" {
			cancel()
		}
		<-done
		select {
		case <-cancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream request was not cancelled when the client left")
		}
	}

	for i, tc := range []struct{ name, path string }{{"before headers", "/slow"}, {"mid-stream", "/stream"}} {
		t.Run(tc.name, func(t *testing.T) {
			id := "client-gone-" + tc.path[1:]
			leave(t, tc.path, id)
			var line map[string]any
			testkit.WaitFor(t, 5*time.Second, "the access-log line", func() bool {
				line = accessLine(t, p.logs, id)
				return line != nil
			})
			if line["status"] != float64(StatusClientClosed) || line["error"] != string(kindClientClosed) || line["route"] != "slow" {
				t.Errorf("access log %v; want status 499, error client_closed, route slow", line)
			}
			if v := testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"route": "slow", "code": "499"}); v != float64(i+1) {
				t.Errorf("breakwater_requests_total{code=499} = %v, want %d", v, i+1)
			}
			for _, code := range []string{"200", "502", "503", "504"} {
				if v := testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"route": "slow", "code": code}); v != 0 {
					t.Errorf("breakwater_requests_total{code=%s} = %v, want 0", code, v)
				}
			}
			if n := hits.Load(); n != int32(i+1) {
				t.Errorf("the upstream was called %d times in all, want %d: no retry after the client left", n, i+1)
			}
			for _, br := range p.srv.Live().Breakers {
				if b := br.Status(); b.State != policy.Closed || b.Failures != 0 {
					t.Errorf("breaker %+v; want closed with no failures", b)
				}
			}
		})
	}
	if resp, body := p.get(t, "/ok"); resp.StatusCode != http.StatusOK {
		t.Errorf("next request: %d %s, want 200", resp.StatusCode, body)
	}
}
