package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// rawRequest writes head (and then body) on a fresh socket to the proxy
// and stalls; it returns the response read within 10 s and whether the
// proxy then closed the connection.
func rawRequest(t *testing.T, addr, head, body string) (*http.Response, []byte, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, head+body); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response to a stalled request within 10 s: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The connection must be closed: anything the client sends next has
	// lost its framing.
	_, err = br.ReadByte()
	return resp, b, err == io.EOF
}

func TestStalledRequestBodyGets408(t *testing.T) {
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})
	p := startProxy(t, `
server: { body_idle_timeout: 300ms }
upstreams:
  up: { url: "{{UP}}" }
routes:
  - name: stream
    match: { path_prefix: /stream/ }
    upstream: up
    retry: { max_body: 16 }
  - name: r
    match: { path_prefix: /r/ }
    upstream: up
`, map[string]string{"UP": up.URL})
	addr := strings.TrimPrefix(p.URL, "http://")

	cases := []struct {
		name, head, body string
		rpcID            string // the JSON-RPC id the answer must carry; "" = problem form
	}{
		{"PUT buffered for replay", "PUT /r/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", "0123456789", ""},
		{"PUT streamed upstream", "PUT /stream/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", strings.Repeat("x", 50), ""},
		{"JSON POST read for detection", "POST /r/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", `{"a":`, ""},
		{"JSON-RPC POST whose id came first", "POST /r/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", `{"jsonrpc":"2.0","id":7,`, "7"},
		{"chunked POST", "POST /r/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n", ""},
		{"JSON POST that no route takes", "POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", `{"jsonrpc":"2.0","id":"q",`, `"q"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, closed := rawRequest(t, addr, tc.head, tc.body)
			if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("X-Breakwater-Error") != "request_timeout" {
				t.Fatalf("got %d %q, want 408 request_timeout: %s", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), body)
			}
			if !resp.Close || !closed {
				t.Errorf("Connection: close = %v, connection closed = %v; want both", resp.Close, closed)
			}
			if tc.rpcID == "" {
				var pb problem
				if err := json.Unmarshal(body, &pb); err != nil || pb.Status != 408 {
					t.Errorf("want a problem body with status 408, got %s", body)
				}
				return
			}
			var rr rpcReply
			if err := json.Unmarshal(body, &rr); err != nil || string(rr.ID) != tc.rpcID || rr.Error.Code != -31504 {
				t.Errorf("want JSON-RPC error -31504 for id %s, got %s", tc.rpcID, body)
			}
		})
	}
	if got := testkit.SumMetric(t, p.metrics.Registry, "breakwater_upstream_attempts_total", map[string]string{"result": "5xx"}); got != 0 {
		t.Errorf("a stalled client counted as %v upstream failures", got)
	}
}

// A body that keeps arriving, slowly, is not stalled.
func TestSlowButSteadyUploadPasses(t *testing.T) {
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	p := startProxy(t, "server: { body_idle_timeout: 400ms }\n"+testkit.OneRoute("{{UP}}", "    retry: { max_body: 4 }\n"), map[string]string{"UP": up.URL})
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 8; i++ {
			time.Sleep(150 * time.Millisecond)
			_, _ = pw.Write([]byte("abcd"))
		}
		pw.Close()
	}()
	req := newRequest(t, http.MethodPut, p.URL+"/x", pr)
	req.ContentLength = 32
	resp, body := do(t, p.Client(), req)
	if resp.StatusCode != 200 || string(body) != "32" {
		t.Fatalf("got %d %q, want 200 \"32\"", resp.StatusCode, body)
	}
}

// A client that stops reading its response must not keep a bulkhead slot.
func TestStalledReaderFreesItsBulkheadSlot(t *testing.T) {
	big := strings.Repeat("x", 64<<20)
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "small")
	})
	p := startProxy(t, testkit.OneRoute("{{UP}}", `
    stream_idle_timeout: 500ms
    bulkhead: { max_concurrent: 2, max_wait: 0s }
`), map[string]string{"UP": up.URL})
	addr := strings.TrimPrefix(p.URL, "http://")
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096) // a client that never reads
		}
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "both slots taken", func() bool { return up.Hits.Load() == 2 })
	resp, _ := p.get(t, "/small")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("with two stalled readers the third request got %d, want 503 bulkhead_full", resp.StatusCode)
	}
	testkit.WaitFor(t, 15*time.Second, "a slot freed by the stalled readers", func() bool {
		resp, body := p.get(t, "/small")
		return resp.StatusCode == 200 && string(body) == "small"
	})
	// Their access-log lines say why they ended.
	testkit.WaitFor(t, 5*time.Second, "the stalled readers logged", func() bool {
		n := 0
		for _, l := range p.logs.JSONLines(t) {
			if l["message"] == "request" && l["error"] == "client_stalled" {
				n++
			}
		}
		return n == 2
	})
}

func TestConnectAndTraceAreRefusedUnlessListed(t *testing.T) {
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Auth", r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, r.Method)
	})
	p := startProxy(t, `
upstreams:
  up: { url: "{{UP}}", headers: { set: { Authorization: "Bearer injected-secret" } } }
routes:
  - name: trace-ok
    match: { path_prefix: /diag/, methods: [TRACE] }
    upstream: up
  - name: all
    match: { path_prefix: / }
    upstream: up
`, map[string]string{"UP": up.URL})
	addr := strings.TrimPrefix(p.URL, "http://")

	for _, head := range []string{
		"TRACE /api HTTP/1.1\r\nHost: a\r\n\r\n",
		"CONNECT upstream.example:443 HTTP/1.1\r\nHost: upstream.example:443\r\n\r\n",
	} {
		resp, body, _ := rawRequest(t, addr, head, "")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("X-Breakwater-Error") != "method_not_allowed" || resp.Header.Get("Allow") == "" {
			t.Errorf("%q: got %d %q Allow=%q, want 405 method_not_allowed with Allow", head[:12], resp.StatusCode,
				resp.Header.Get("X-Breakwater-Error"), resp.Header.Get("Allow"))
		}
		if strings.Contains(string(body), "injected-secret") {
			t.Errorf("the injected credential reached the client")
		}
	}
	if n := up.Hits.Load(); n != 0 {
		t.Fatalf("the upstream saw %d refused requests", n)
	}
	resp, body := do(t, p.Client(), newRequest(t, http.MethodTrace, p.URL+"/diag/x", nil))
	if resp.StatusCode != 200 || string(body) != "TRACE" {
		t.Errorf("a route that lists TRACE: got %d %q, want it forwarded", resp.StatusCode, body)
	}
}

func TestMaxHeaderBytesIsTheConfiguredNumber(t *testing.T) {
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {})
	p := startProxy(t, "server: { max_header_bytes: 1KiB }\n"+testkit.OneRoute("{{UP}}", ""), map[string]string{"UP": up.URL})
	req := newRequest(t, http.MethodGet, p.URL+"/x", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 5000))
	resp, _ := do(t, p.Client(), req)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("5 000 bytes of headers under max_header_bytes 1KiB: got %d, want 431", resp.StatusCode)
	}
	req = newRequest(t, http.MethodGet, p.URL+"/x", nil)
	req.Header.Set("X-Small", strings.Repeat("s", 700))
	if resp, _ := do(t, p.Client(), req); resp.StatusCode != 200 {
		t.Errorf("700 bytes of headers: got %d, want 200", resp.StatusCode)
	}
	if up.Hits.Load() != 1 {
		t.Errorf("upstream saw %d requests, want only the small one", up.Hits.Load())
	}
}
