package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// The hardening suite: one black-box regression test per defect of issue
// #11 that a hostile client, upstream or web page can show against the
// real binary, each written to SPEC.md ("Admin hardening", "Slow
// clients", "Errors added by Part 2"). They run in the short form.

// stalled is one hostile upload: headers and the start of a body, then
// nothing more.
type stalled struct {
	name, raw string
	// rpcID, when set, is the JSON-RPC id the stalled bytes carry: the
	// answer may be in JSON-RPC form (with that id and code -31504) or,
	// when breakwater could not read the id from half a body, a problem.
	rpcID string
	// streamed: the body is streamed to the upstream, which must see it end.
	streamed bool
}

// TestDefect01StalledUpload: a request body that stops arriving is
// abandoned after server.body_idle_timeout (1 s here): 408
// request_timeout, Connection: close, and the socket closed, whether the
// stall hits the replay buffering (PUT), the JSON-RPC detection read (JSON
// POST) or a body streamed to the upstream (larger than retry.max_body);
// in the last case the upstream sees its request body end.
func TestDefect01StalledUpload(t *testing.T) {
	type upload struct {
		n   int64
		err error
	}
	began, ended := make(chan struct{}, 1), make(chan upload, 1)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/stream/") {
			began <- struct{}{}
		}
		n, err := io.Copy(io.Discard, r.Body)
		if strings.HasPrefix(r.URL.Path, "/stream/") {
			ended <- upload{n, err}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	b := startBW(t, `
server: { body_idle_timeout: 1s }
upstreams:
  app: { url: "`+up.URL+`" }
routes:
  - name: stream
    match: { path_prefix: /stream/ }
    upstream: app
    retry: { max_body: 1KiB }
  - { name: app, match: { path_prefix: / }, upstream: app }
`)
	const streamed = 1 << 20
	cases := []stalled{
		{name: "PUT (replay buffering)",
			raw: "PUT /put HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"},
		{name: "JSON POST (JSON-RPC detection)",
			raw: "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":"},
		{name: "JSON-RPC POST, id sent",
			raw:   "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":7,",
			rpcID: "7"},
		{name: "PUT streamed upstream (1 MiB > retry.max_body)",
			raw:      "PUT /stream/put HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(streamed) + "\r\n\r\n" + strings.Repeat("s", 64<<10),
			streamed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, br := dialRaw(t, hostOf(b.URL))
			start := time.Now()
			if _, err := io.WriteString(conn, tc.raw); err != nil {
				t.Fatal(err)
			}
			resp, body, err := readAnswer(conn, br, 10*time.Second)
			if err != nil {
				t.Fatalf("no answer %s after the body stalled (body_idle_timeout 1s): %v", ms(time.Since(start)), err)
			}
			t.Logf("%d %s after %s, Connection: close %v; body %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"),
				ms(time.Since(start)), resp.Close, body)
			checkRequestTimeout(t, resp, body, tc.rpcID)
			if err := closedWithin(conn, br, 5*time.Second); err != nil {
				t.Errorf("the connection was not closed after the 408: %v", err)
			}
			if !tc.streamed {
				return
			}
			select {
			case <-began:
			default:
				t.Fatalf("the upstream never got the request: its body was not streamed")
			}
			select {
			case u := <-ended:
				t.Logf("the upstream's request body ended after %d of %d bytes: %v", u.n, streamed, u.err)
			case <-time.After(5 * time.Second):
				t.Errorf("the upstream's request body did not end within 5 s of the 408")
			}
		})
	}
}

// checkRequestTimeout checks a 408 request_timeout answer: status,
// X-Breakwater-Error, Connection: close, and a body in problem form, or
// in JSON-RPC form with id rpcID and code -31504 when rpcID is set.
func checkRequestTimeout(t *testing.T, resp *http.Response, body []byte, rpcID string) {
	t.Helper()
	if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("X-Breakwater-Error") != "request_timeout" {
		t.Errorf("answer %d %q, want 408 request_timeout", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if !resp.Close {
		t.Errorf("no Connection: close on the 408")
	}
	var rpc struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code int `json:"code"`
			Data struct {
				Kind string `json:"kind"`
			} `json:"data"`
		} `json:"error"`
	}
	var problem struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/problem+json"):
		if err := json.Unmarshal(body, &problem); err != nil || problem.Status != http.StatusRequestTimeout ||
			!strings.HasSuffix(problem.Type, "request_timeout") {
			t.Errorf("problem body %s (%v), want status 408 and a request_timeout type", body, err)
		}
	case rpcID != "" && strings.HasPrefix(ct, "application/json"):
		if err := json.Unmarshal(body, &rpc); err != nil || rpc.JSONRPC != "2.0" || string(rpc.ID) != rpcID ||
			rpc.Error.Code != -31504 || rpc.Error.Data.Kind != "request_timeout" {
			t.Errorf("JSON-RPC body %s (%v), want id %s, code -31504, kind request_timeout", body, err, rpcID)
		}
	default:
		t.Errorf("Content-Type %q, want the problem form%s", ct, map[bool]string{true: " or the JSON-RPC form"}[rpcID != ""])
	}
}

// TestDefect02StalledReader: two clients ask for a 64 MiB body and never
// read it. stream_idle_timeout (1 s here) counts the write side too: their
// responses are ended and the bulkhead's two slots freed, so a third
// client is served (200, not bulkhead_full) within a few seconds.
func TestDefect02StalledReader(t *testing.T) {
	const big = 64 << 20
	var bigSeen atomic.Int64
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		bigSeen.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(big))
		chunk := bytes.Repeat([]byte("b"), 64<<10)
		for sent := 0; sent < big; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	b := startBW(t, testkit.OneRoute(up.URL, `
    stream_idle_timeout: 1s
    bulkhead: { max_concurrent: 2, max_wait: 0s }
`))
	var readers []net.Conn
	var brs []*bufio.Reader
	for i := 0; i < 2; i++ {
		conn, br := dialRaw(t, hostOf(b.URL))
		if _, err := io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		readers, brs = append(readers, conn), append(brs, br)
	}
	testkit.WaitFor(t, 10*time.Second, "both stalled readers' requests upstream", func() bool { return bigSeen.Load() == 2 })
	start := time.Now()
	c := client(5 * time.Second)
	kinds := map[string]int{}
	var last answer
	for time.Since(start) < 15*time.Second {
		last = get(c, b.URL+"/small")
		kinds[fmt.Sprintf("%d %s", last.status, last.kind)]++
		if last.err == nil && last.status == 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("a third client, while two readers stall: %v; served after %s", kinds, ms(time.Since(start)))
	if last.err != nil || last.status != 200 {
		t.Fatalf("no 200 within 15 s of two stalled readers (stream_idle_timeout 1s): last %d %q %v", last.status, last.kind, last.err)
	}
	// Their responses were ended: what they read now stops short of 64 MiB.
	for i, conn := range readers {
		n, err := drain(conn, brs[i], 10*time.Second)
		t.Logf("stalled reader %d then read %d bytes (headers included) and %v", i+1, n, err)
		if err == nil || isTimeout(err) || n >= big {
			t.Errorf("stalled reader %d: %d bytes then %v, want its response ended short of 64 MiB", i+1, n, err)
		}
	}
}

// TestDefect03AdminOrigin: with the default admin listener (loopback, no
// token), a POST whose Origin is not the admin's own is refused (403) and
// changes nothing, and any request whose Host is not a loopback name or
// address is refused (DNS rebinding); the admin's own origin and loopback
// Hosts are served.
func TestDefect03AdminOrigin(t *testing.T) {
	b := startBW(t, testkit.OneRoute(testkit.DeadURL(t), ""))
	port := b.Admin[strings.LastIndex(b.Admin, ":")+1:]
	do := func(method, path string, header map[string]string) int {
		t.Helper()
		req, err := http.NewRequest(method, b.Admin+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("%s %s %v → %d", method, path, header, resp.StatusCode)
		return resp.StatusCode
	}
	evil := map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}
	for _, step := range []struct {
		method, path string
		header       map[string]string
		want         int
		breaker      string // the breaker's state afterwards; "" = not checked
	}{
		{"POST", "/breakers/r?state=open", evil, http.StatusForbidden, "closed"},
		{"POST", "/cache/purge", evil, http.StatusForbidden, ""},
		{"GET", "/config", map[string]string{"Host": "evil.example"}, http.StatusForbidden, ""},
		{"GET", "/config", map[string]string{"Host": "evil.example:" + port}, http.StatusForbidden, ""},
		// What a local browser on the dashboard, or curl, sends: served.
		{"GET", "/config", map[string]string{"Host": "localhost:" + port}, http.StatusOK, ""},
		{"POST", "/breakers/r?state=open", map[string]string{"Origin": "http://127.0.0.1:" + port}, http.StatusOK, "open"},
		{"POST", "/breakers/r?state=closed", nil, http.StatusOK, "closed"},
	} {
		if got := do(step.method, step.path, step.header); got != step.want {
			t.Errorf("%s %s with %v: %d, want %d", step.method, step.path, step.header, got, step.want)
		}
		if step.breaker == "" {
			continue
		}
		if s, listed := testkit.BreakerState(t, b.Admin, "r"); s != step.breaker {
			t.Errorf("breaker %q (listed: %v) after %s %s with %v, want %s", s, listed, step.method, step.path, step.header, step.breaker)
		}
	}
}

// TestDefect10AdminBearerLowercase: the Authorization scheme is
// case-insensitive (RFC 9110): `bearer TOKEN` is accepted like `Bearer
// TOKEN`; no token is still 401.
func TestDefect10AdminBearerLowercase(t *testing.T) {
	const token = "chaos-admin-token-8c1f"
	b := startBW(t, `admin: { token: "`+token+`" }`+testkit.OneRoute(testkit.DeadURL(t), ""))
	for _, tc := range []struct {
		scheme string // "" = no Authorization header
		want   int
	}{{"", 401}, {"Bearer", 200}, {"bearer", 200}, {"BEARER", 200}} {
		req, _ := http.NewRequest("POST", b.Admin+"/breakers/r?state=closed", nil)
		if tc.scheme != "" {
			req.Header.Set("Authorization", tc.scheme+" "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("POST with scheme %q → %d", tc.scheme, resp.StatusCode)
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization scheme %q: %d, want %d", tc.scheme, resp.StatusCode, tc.want)
		}
	}
}

// TestDefect14GetReload: GET /reload is 405 with Allow naming POST, not
// the dashboard's 404.
func TestDefect14GetReload(t *testing.T) {
	b := startBW(t, testkit.OneRoute(testkit.DeadURL(t), ""))
	resp, err := http.Get(b.Admin + "/reload")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("GET /reload → %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "POST") {
		t.Errorf("GET /reload: %d, Allow %q; want 405 with Allow naming POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestDefect08HopByHop: a header that the upstream's Connection names is
// hop-by-hop and never reaches the client, also when Connection says
// close as well (Go's transport drops that Connection header first), on
// either transport ($BREAKWATER_TRANSPORT).
func TestDefect08HopByHop(t *testing.T) {
	up := rawUpstream(t, func(conn net.Conn, req *http.Request) bool {
		connection := strings.TrimPrefix(req.URL.Path, "/")
		connection = strings.ReplaceAll(connection, "_", ", ")
		_, _ = fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nConnection: %s\r\nX-Secret-Hop: 1\r\nContent-Length: 2\r\n\r\nok", connection)
		if strings.Contains(connection, "close") {
			conn.Close()
			return false
		}
		return true
	})
	b := startBW(t, testkit.OneRoute(up, "    retry: off\n"))
	c := client(5 * time.Second)
	for _, connection := range []string{"X-Secret-Hop", "close, X-Secret-Hop", "X-Secret-Hop, close"} {
		resp, err := c.Get(b.URL + "/" + strings.ReplaceAll(connection, ", ", "_"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("upstream Connection: %-20s → %d, X-Secret-Hop %q", connection, resp.StatusCode, resp.Header.Values("X-Secret-Hop"))
		if resp.StatusCode != 200 {
			t.Errorf("Connection: %s: status %d, want the upstream's 200", connection, resp.StatusCode)
		}
		if v := resp.Header.Values("X-Secret-Hop"); len(v) > 0 {
			t.Errorf("upstream Connection: %s: X-Secret-Hop %q reached the client", connection, v)
		}
	}
}

// TestDefect09MaxHeaderBytes: server.max_header_bytes is the number
// enforced, without Go's 4 096 bytes of slack: 1 KiB configured, 5 000
// bytes of headers get 431 and never reach the upstream.
func TestDefect09MaxHeaderBytes(t *testing.T) {
	var seen counter
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen.add(r.URL.Path) }))
	b := startBW(t, `server: { max_header_bytes: 1KiB }`+testkit.OneRoute(up.URL, ""))
	for _, tc := range []struct {
		path string
		pad  int
		want int
	}{{"/small", 500, 200}, {"/big", 4900, 431}} {
		raw := "GET " + tc.path + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", tc.pad) + "\r\nConnection: close\r\n\r\n"
		status, _ := rawRequest(t, hostOf(b.URL), raw)
		t.Logf("%d bytes of request head → %d; upstream saw %s %d times", len(raw), status, tc.path, seen.path(tc.path))
		if status != tc.want {
			t.Errorf("%d bytes of request head under max_header_bytes 1KiB: %d, want %d", len(raw), status, tc.want)
		}
		if tc.want != 200 && seen.path(tc.path) != 0 {
			t.Errorf("the upstream saw the oversized request")
		}
	}
}

// TestDefect12ConnectTrace: CONNECT and TRACE are refused (405 with
// Allow, kind method_not_allowed) unless a route lists them in
// match.methods: the upstream never sees them, nor the credential the
// route injects. A route that lists TRACE forwards it.
func TestDefect12ConnectTrace(t *testing.T) {
	const secret = "chaos-injected-credential-5b2e"
	var seen counter
	var leaked atomic.Int64
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r.Method + " " + r.URL.Path)
		if strings.Contains(r.Header.Get("Authorization"), secret) {
			leaked.Add(1)
		}
		if r.Method == http.MethodTrace { // a reflecting upstream, as RFC 9110 describes TRACE
			_ = r.Header.Write(w)
		}
	}))
	b := startBW(t, `
upstreams:
  app:
    url: "`+up.URL+`"
    headers: { set: { Authorization: "Bearer `+secret+`" } }
routes:
  - { name: trace, match: { path_prefix: /trace/, methods: [TRACE] }, upstream: app }
  - { name: app, match: { path_prefix: / }, upstream: app }
`)
	for _, tc := range []struct{ name, line string }{
		{"TRACE", "TRACE /x HTTP/1.1"},
		{"CONNECT, path form", "CONNECT /x HTTP/1.1"},
		{"CONNECT, authority form", "CONNECT example.com:443 HTTP/1.1"},
	} {
		conn, br := dialRaw(t, hostOf(b.URL))
		_, _ = io.WriteString(conn, tc.line+"\r\nHost: x\r\n\r\n")
		resp, body, err := readAnswer(conn, br, 5*time.Second)
		conn.Close()
		if err != nil {
			t.Errorf("%s: no answer: %v", tc.name, err)
			continue
		}
		kind := resp.Header.Get("X-Breakwater-Error")
		t.Logf("%-24s → %d %s, Allow %q; upstream requests so far %d", tc.name, resp.StatusCode, kind, resp.Header.Get("Allow"), seen.total())
		if resp.StatusCode != http.StatusMethodNotAllowed || kind != "method_not_allowed" || resp.Header.Get("Allow") == "" {
			t.Errorf("%s: %d %q, Allow %q; want 405 method_not_allowed with Allow", tc.name, resp.StatusCode, kind, resp.Header.Get("Allow"))
		}
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("%s: the injected credential came back to the client", tc.name)
		}
	}
	if n := seen.total(); n != 0 || leaked.Load() != 0 {
		t.Errorf("the upstream saw %d refused requests (%v), %d with the injected credential", n, seen.seen(), leaked.Load())
	}
	// Listed explicitly: forwarded, credential and all (the route's choice).
	status, _ := rawRequest(t, hostOf(b.URL), "TRACE /trace/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	t.Logf("TRACE on a route that lists it → %d; upstream saw it %d times", status, seen.path("TRACE /trace/y"))
	if status != 200 || seen.path("TRACE /trace/y") != 1 {
		t.Errorf("TRACE on a route listing it: %d, upstream saw it %d times; want 200, forwarded once", status, seen.path("TRACE /trace/y"))
	}
}

// TestDefect11RawStderr: every line breakwater prints is one JSON object,
// also when its upstream transport has something to say: here an upstream
// that writes an unsolicited response on an idle keep-alive connection
// (net/http's transport logs it raw, with the upstream's bytes), whichever
// transport carries the request: GETs, and POSTs with a chunked body
// (which a lean HTTP/1.1 path may hand to net/http's). The next request
// still gets its own answer, never the unsolicited one.
func TestDefect11RawStderr(t *testing.T) {
	var conns atomic.Int64
	var known sync.Map // net.Conn → true
	up := rawUpstream(t, func(conn net.Conn, req *http.Request) bool {
		if _, seen := known.LoadOrStore(conn, true); !seen {
			conns.Add(1)
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		go func() {
			// Once the connection is idle in breakwater's pool: bytes
			// nobody asked for.
			time.Sleep(100 * time.Millisecond)
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Unsolicited: 1\r\nContent-Length: 11\r\n\r\nunsolicited")
		}()
		return true
	})
	b := startBW(t, testkit.OneRoute(up, "    retry: off\n"))
	c := client(5 * time.Second)
	const n = 4
	for i := 0; i < n; i++ {
		method, body := "GET", io.Reader(nil)
		if i%2 == 1 {
			// A reader of unknown length: sent chunked.
			method, body = "POST", struct{ io.Reader }{strings.NewReader("chunked")}
		}
		req, _ := http.NewRequest(method, b.URL+"/idle", body)
		resp, err := c.Do(req)
		var got []byte
		status := 0
		if err == nil {
			got, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		t.Logf("request %d, %s: %d %q", i+1, method, status, got)
		if err != nil || status != 200 || string(got) != "ok" {
			t.Errorf("request %d, %s: %d %q %v, want the upstream's own 200 ok, not a response it was not asked for", i+1, method, status, got, err)
		}
		time.Sleep(500 * time.Millisecond) // the unsolicited bytes arrive on the idle connection
	}
	out := b.Out.String()
	bad := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			bad++
			t.Errorf("a line that is not one JSON object: %.200q", line)
		}
	}
	t.Logf("%d requests, each answer followed by an unsolicited response on the idle upstream connection: %d upstream connections; %d lines printed, %d not JSON",
		n, conns.Load(), strings.Count(out, "\n"), bad)
}

// upstream is an httptest server for h, closed at the end of the test
// after breakwater is killed (cleanups run last first): a handler stuck
// writing to breakwater would block a deferred Close for good.
func upstream(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(h)
	t.Cleanup(up.Close)
	return up
}

// rawUpstream is an upstream written by hand on a raw listener, for
// answers no net/http server would send. serve answers each request read
// from a connection, writing on conn; the connection is read for another
// request while serve returns true, else left to serve, which closes it. It returns the upstream's http:// URL.
func rawUpstream(t *testing.T, serve func(conn net.Conn, req *http.Request) bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				br := bufio.NewReader(conn)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						conn.Close()
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if !serve(conn, req) {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// dialRaw opens a raw connection to addr, closed at the end of the test.
func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// readAnswer reads one response and its body from br within the given time.
func readAnswer(conn net.Conn, br *bufio.Reader, within time.Duration) (*http.Response, []byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(within))
	defer conn.SetReadDeadline(time.Time{})
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// closedWithin reads what is left on conn and returns nil once the server
// has closed it (EOF or reset), or the error that stopped the wait: a
// timeout when it stayed open.
func closedWithin(conn net.Conn, br *bufio.Reader, within time.Duration) error {
	n, err := drain(conn, br, within)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err):
		return nil
	case n > 0:
		return fmt.Errorf("%d more bytes, then %v", n, err)
	default:
		return err
	}
}

// drain reads conn until an error or within passes; it returns the bytes
// read and the error that stopped it.
func drain(conn net.Conn, br *bufio.Reader, within time.Duration) (int64, error) {
	_ = conn.SetReadDeadline(time.Now().Add(within))
	n, err := io.Copy(io.Discard, br)
	if err == nil {
		err = io.EOF // io.Copy reports a clean end as nil
	}
	return n, err
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestStalledUploadsAtScale: many stalled uploads at once (issue #11: 500
// of them took the first release from 14 MB to 149 MB RSS and 511
// goroutines, for as long as the sockets stayed open). Each gets its 408
// after body_idle_timeout, and the goroutines they held are gone after.
// RSS and goroutines before, during and after are reported.
func TestStalledUploadsAtScale(t *testing.T) {
	n := 100
	if full() {
		n = 500
	}
	var hits atomic.Int64
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b := startBW(t, `
server: { body_idle_timeout: 2s }
upstreams:
  app: { url: "`+up.URL+`" }
routes:
  - { name: app, match: { path_prefix: / }, upstream: app }
`)
	const mib = 1 << 20
	goroutines0, rss0 := b.metric("go_goroutines"), b.metric("process_resident_memory_bytes")/mib
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i], readers[i] = dialRaw(t, hostOf(b.URL))
		if _, err := io.WriteString(conns[i], "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	goroutines1, rss1 := b.metric("go_goroutines"), b.metric("process_resident_memory_bytes")/mib
	start := time.Now()
	var got atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			resp, _, err := readAnswer(conns[i], readers[i], 15*time.Second)
			if err == nil && resp.StatusCode == http.StatusRequestTimeout && resp.Header.Get("X-Breakwater-Error") == "request_timeout" {
				got.Add(1)
			}
			conns[i].Close()
		})
	}
	wg.Wait()
	answered := time.Since(start)
	var goroutines2 float64
	testkit.WaitFor(t, 10*time.Second, "the stalled uploads' goroutines gone", func() bool {
		goroutines2 = b.metric("go_goroutines")
		return goroutines2 <= goroutines0+10
	})
	rss2 := b.metric("process_resident_memory_bytes") / mib
	t.Logf("%d stalled uploads: %d × 408 request_timeout, the last %s after the stall began (body_idle_timeout 2 s); goroutines %.0f → %.0f while stalled → %.0f after; RSS %.1f → %.1f → %.1f MiB",
		n, got.Load(), ms(answered+time.Second), goroutines0, goroutines1, goroutines2, rss0, rss1, rss2)
	if got.Load() != int64(n) {
		t.Errorf("%d of %d stalled uploads got 408 request_timeout", got.Load(), n)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the upstream saw %d of the stalled uploads (each is buffered for replay first)", n)
	}
}
