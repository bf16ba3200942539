package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
)

// testProxy is a Server loaded from YAML behind a real listener.
type testProxy struct {
	*httptest.Server
	srv     *Server
	metrics *observe.Metrics
	logs    *testkit.SyncBuffer // the access log, one JSON object a line
}

// startProxy parses yaml, loads it into a new Server and serves it. Every
// {{NAME}} in yaml is replaced by vars[NAME] first (upstream URLs, files).
func startProxy(t *testing.T, yaml string, vars map[string]string) *testProxy {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	metrics := observe.NewMetrics("test")
	srv := New(zerolog.New(logs), observe.NewFanout(metrics, observe.NewHub()))
	if err := srv.Load(parseConfig(t, yaml, vars)); err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) }) // health checkers
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &testProxy{Server: ts, srv: srv, metrics: metrics, logs: logs}
}

// reload loads yaml (with vars, as startProxy) into the running proxy.
func (p *testProxy) reload(t *testing.T, yaml string, vars map[string]string) {
	t.Helper()
	if err := p.srv.Load(parseConfig(t, yaml, vars)); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

// parseConfig parses yaml after replacing every {{NAME}} by vars[NAME].
func parseConfig(t *testing.T, yaml string, vars map[string]string) *config.Config {
	t.Helper()
	for k, v := range vars {
		yaml = strings.ReplaceAll(yaml, "{{"+k+"}}", v)
	}
	cfg, _, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, testkit.Overrides())
	if err != nil {
		t.Fatalf("config.Parse:\n%v\n--- yaml ---\n%s", err, yaml)
	}
	return cfg
}

// startUpstream starts a real upstream server for h.
func startUpstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// do sends req through the proxy's client and reads the whole body.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// get is a plain GET through the proxy.
func (p *testProxy) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	return do(t, p.Client(), newRequest(t, http.MethodGet, p.URL+path, nil))
}

// accessLine returns the access-log line in logs of the request with id,
// or nil.
func accessLine(t *testing.T, logs *testkit.SyncBuffer, id string) map[string]any {
	t.Helper()
	for _, l := range logs.JSONLines(t) {
		if l["message"] == "request" && l["request_id"] == id {
			return l
		}
	}
	return nil
}

// problem is an application/problem+json body.
type problem struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
	Route      string `json:"route"`
	RequestID  string `json:"request_id"`
	RetryAfter *int   `json:"retry_after_seconds"`
}

// rpcReply is a JSON-RPC error response.
type rpcReply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Kind      string `json:"kind"`
			RequestID string `json:"request_id"`
		} `json:"data"`
	} `json:"error"`
}
