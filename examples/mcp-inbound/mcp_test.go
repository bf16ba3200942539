// Package mcpinbound_test runs this directory's breakwater.yaml with the
// built breakwater binary in front of MCP servers made with the official Go
// SDK, and talks to them through it with the SDK's own client:
//
//   - a stateful session (protocol 2025-11-25): Mcp-Session-Id, the
//     standalone GET event stream, progress notifications streamed while a
//     tool runs, and the DELETE that ends the session;
//   - a stateless one (protocol 2026-07-28): the SDK sends Mcp-Method and
//     Mcp-Name on every POST, which agree with the body that routes it;
//   - a rate-limited tools/call, answered in breakwater's JSON-RPC form.
package mcpinbound_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// breakwaterBin is the binary TestMain builds once for every test here.
var breakwaterBin string

func TestMain(m *testing.M) {
	var flags []string
	if testkit.RaceEnabled {
		// The breakwater binary is race-built too, so that the proxy's own
		// goroutines are checked while MCP traffic flows through it.
		flags = append(flags, "-race")
	}
	os.Exit(testkit.RunWithBinary(m, &breakwaterBin, flags...))
}

// Both example files must validate without a single warning.
func TestExamplesValidate(t *testing.T) {
	for _, file := range []string{"breakwater.yaml", "../mcp-egress/breakwater.yaml"} {
		t.Run(filepath.Base(filepath.Dir(mustAbs(t, file))), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(breakwaterBin, "validate", "-config", file)
			cmd.Env = append(os.Environ(), "CAKEMAIL_TOKEN=test-token")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("breakwater validate %s: %v\n%s%s", file, err, stdout.String(), stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("breakwater validate %s printed warnings:\n%s", file, stderr.String())
			}
			if !strings.Contains(stdout.String(), ": ok") {
				t.Errorf("validate output lacks the ok line:\n%s", stdout.String())
			}
		})
	}
}

const (
	progressSteps = 5
	progressGap   = 200 * time.Millisecond
	// ackTimeout is how long slow_report waits for the client to have seen
	// a notification: far above any scheduling delay, far below the route
	// timeout, so a buffering proxy fails the call with a clear message.
	ackTimeout = 10 * time.Second
)

// A stateful session through breakwater: initialize, the GET stream and a
// server-initiated message on it, progress streamed as it happens, DELETE.
func TestStatefulSession(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the breakwater binary and MCP servers")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := newMCPServer(t, false)
	bw := startBreakwater(t, srv.url)
	w := newWire(t)

	progress := &progressLog{acks: srv.acks}
	listChanged := make(chan struct{}, 1)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-client", Version: "v1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: progress.handle,
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: bw.URL + "/mcp", HTTPClient: w.client()},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatalf("connect through breakwater: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			cs.Close()
		}
	}()
	if v := cs.InitializeResult().ProtocolVersion; v != "2025-11-25" {
		t.Errorf("negotiated protocol %q, want 2025-11-25", v)
	}
	sid := cs.ID()
	if sid == "" {
		t.Fatal("no Mcp-Session-Id: the session header did not come back through breakwater")
	}

	checkTools(ctx, t, cs, "add", "expensive_tool", "slow_report")

	// The SDK opens the standalone GET stream in the background after
	// initialize; the server answers its headers at once.
	get := w.waitFor(t, 10*time.Second, "the standalone GET stream", func(e *exchange) bool { return e.method == http.MethodGet })
	if get.status != http.StatusOK || !strings.HasPrefix(get.resp.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET stream: status %d, Content-Type %q; want 200 text/event-stream\n%s", get.status, get.resp.Get("Content-Type"), get.respBody)
	}
	if got := get.req.Get("Mcp-Session-Id"); got != sid {
		t.Errorf("GET stream sent Mcp-Session-Id %q, want %q", got, sid)
	}
	if route := routeOf(get); route != "mcp-events" {
		t.Errorf("the GET stream went to route %q, want mcp-events", route)
	}

	// A server-initiated message travels on that stream: adding a tool makes
	// the server announce notifications/tools/list_changed.
	mcp.AddTool(srv.Server, &mcp.Tool{Name: "late_tool", Description: "added while the session runs"}, addTwo)
	select {
	case <-listChanged:
	case <-time.After(10 * time.Second):
		t.Fatal("notifications/tools/list_changed did not arrive on the GET stream through breakwater")
	}

	callSlowReport(ctx, t, cs, progress, w)
	// A 2025-11-25 client sends no Mcp-Method or Mcp-Name: the body routes
	// its tool calls all the same.
	post := w.find(func(e *exchange) bool { return e.rpcMethod() == "tools/call" })
	if post.req.Get("Mcp-Method") != "" {
		t.Errorf("a 2025-11-25 client sent Mcp-Method %q", post.req.Get("Mcp-Method"))
	}
	if route := routeOf(post); route != "mcp-tool-calls" {
		t.Errorf("a 2025-11-25 tools/call went to route %q, want mcp-tool-calls (the body decides)", route)
	}

	if err := cs.Close(); err != nil {
		t.Errorf("closing the session: %v", err)
	}
	closed = true
	del := w.find(func(e *exchange) bool { return e.method == http.MethodDelete })
	if del == nil {
		t.Fatal("the client sent no DELETE at close")
	}
	if del.status != http.StatusNoContent || del.req.Get("Mcp-Session-Id") != sid {
		t.Errorf("DELETE: status %d with Mcp-Session-Id %q; want 204 for %q\n%s", del.status, del.req.Get("Mcp-Session-Id"), sid, del.respBody)
	}
	if !srv.saw(http.MethodDelete, sid) {
		t.Error("the DELETE did not reach the MCP server")
	}
	testkit.WaitFor(t, 5*time.Second, "the server session to end after DELETE", func() bool {
		for range srv.Sessions() {
			return false
		}
		return true
	})
}

// A stateless 2026-07-28 session: no session id, no GET stream, and
// Mcp-Method / Mcp-Name headers that agree with the body that routes.
func TestStatelessSession(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the breakwater binary and MCP servers")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := newMCPServer(t, true)
	bw := startBreakwater(t, srv.url)
	w := newWire(t)
	progress := &progressLog{acks: srv.acks}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-client", Version: "v1"}, &mcp.ClientOptions{ProgressNotificationHandler: progress.handle})
	// No ProtocolVersion: the SDK's latest, 2026-07-28, via server/discover.
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: bw.URL + "/mcp", HTTPClient: w.client()}, nil)
	if err != nil {
		t.Fatalf("connect through breakwater: %v", err)
	}
	defer cs.Close()
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated protocol %q, want 2026-07-28 (stateless, with Mcp-Method/Mcp-Name headers)", v)
	}
	if cs.ID() != "" {
		t.Errorf("stateless session has id %q", cs.ID())
	}

	checkTools(ctx, t, cs, "add", "expensive_tool", "slow_report")
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 2, "b": 3}})
	if err != nil {
		t.Fatalf("tools/call add: %v", err)
	}
	if got := sumOf(t, res); got != 5 {
		t.Errorf("add(2, 3) = %d", got)
	}

	// The SDK set the headers itself; breakwater held them to the body,
	// routed by the body and passed them on.
	call := w.find(func(e *exchange) bool { return e.rpcMethod() == "tools/call" })
	if call.req.Get("Mcp-Method") != "tools/call" || call.req.Get("Mcp-Name") != "add" {
		t.Errorf("tools/call sent Mcp-Method %q, Mcp-Name %q", call.req.Get("Mcp-Method"), call.req.Get("Mcp-Name"))
	}
	if route := routeOf(call); route != "mcp-tool-calls" {
		t.Errorf("tools/call add went to route %q, want mcp-tool-calls", route)
	}
	list := w.find(func(e *exchange) bool { return e.rpcMethod() == "tools/list" })
	if route := routeOf(list); list.req.Get("Mcp-Method") != "tools/list" || route != "mcp" {
		t.Errorf("tools/list: Mcp-Method %q, route %q; want tools/list on route mcp", list.req.Get("Mcp-Method"), route)
	}
	if !srv.sawHeaders(map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "add"}) {
		t.Error("the MCP server did not receive Mcp-Method/Mcp-Name through breakwater")
	}

	callSlowReport(ctx, t, cs, progress, w)

	if err := cs.Close(); err != nil {
		t.Errorf("closing: %v", err)
	}
	if e := w.find(func(e *exchange) bool { return e.method != http.MethodPost }); e != nil {
		t.Errorf("a stateless session sent %s", e.method)
	}
}

// A tools/call over the expensive tool's limit: breakwater answers 429 in
// the JSON-RPC form, the SDK returns an error, and the session lives on.
func TestRateLimitedToolCall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the breakwater binary and MCP servers")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv := newMCPServer(t, true)
	bw := startBreakwater(t, srv.url)
	w := newWire(t)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-client", Version: "v1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: bw.URL + "/mcp", HTTPClient: w.client()}, nil)
	if err != nil {
		t.Fatalf("connect through breakwater: %v", err)
	}
	defer cs.Close()

	// rate_limit: 6/1m, burst 2 — two calls pass, the third is refused
	// (a slow machine may earn one more token: one every 10 s).
	var callErr error
	passed := 0
	for range 5 {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "expensive_tool", Arguments: map[string]any{"query": "q"}})
		if err != nil {
			callErr = err
			break
		}
		passed++
	}
	if callErr == nil {
		t.Fatal("five calls to expensive_tool passed a 6/1m limit with burst 2")
	}
	if passed < 2 {
		t.Errorf("only %d calls passed before the limit; burst is 2", passed)
	}

	ex := w.find(func(e *exchange) bool { return e.status == http.StatusTooManyRequests })
	if ex == nil {
		t.Fatalf("no 429 on the wire; the call failed with: %v", callErr)
	}
	h := ex.resp
	if h.Get("X-Breakwater-Error") != "rate_limited" {
		t.Errorf("X-Breakwater-Error = %q", h.Get("X-Breakwater-Error"))
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	retryAfter, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || retryAfter < 1 || retryAfter > 10 {
		t.Errorf("Retry-After = %q, want 1 to 10 seconds (one token per 10 s)", h.Get("Retry-After"))
	}
	if p := h.Get("RateLimit-Policy"); !strings.HasPrefix(p, `"mcp-expensive-tool";`) {
		t.Errorf("RateLimit-Policy = %q, want the mcp-expensive-tool route's", p)
	}
	if h.Get("RateLimit") == "" {
		t.Error("no RateLimit header")
	}

	var body struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				Kind       string `json:"kind"`
				RetryAfter *int   `json:"retry_after_seconds"`
				RequestID  string `json:"request_id"`
				Route      string `json:"route"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(ex.respBody, &body); err != nil {
		t.Fatalf("429 body is not JSON: %v\n%s", err, ex.respBody)
	}
	t.Logf("429 Retry-After: %s, RateLimit-Policy: %s, RateLimit: %s; body: %s", h.Get("Retry-After"), h.Get("RateLimit-Policy"), h.Get("RateLimit"), ex.respBody)
	if body.JSONRPC != "2.0" || body.Error.Code != -31429 || body.Error.Data.Kind != "rate_limited" {
		t.Errorf("jsonrpc %q, error.code %d, error.data.kind %q; want 2.0, -31429, rate_limited", body.JSONRPC, body.Error.Code, body.Error.Data.Kind)
	}
	if reqID := ex.rpcID(); string(body.ID) != string(reqID) {
		t.Errorf("error id = %s, want the request's id %s", body.ID, reqID)
	}
	if ra := body.Error.Data.RetryAfter; ra == nil || *ra != retryAfter {
		t.Errorf("error.data.retry_after_seconds = %v, want %d as in Retry-After", ra, retryAfter)
	}
	if id := h.Get("X-Request-Id"); id == "" || body.Error.Data.RequestID != id {
		t.Errorf("error.data.request_id = %q, X-Request-Id = %q", body.Error.Data.RequestID, id)
	}
	wantMsg := fmt.Sprintf("Try again in %d seconds.", retryAfter)
	if !strings.Contains(body.Error.Message, wantMsg) {
		t.Errorf("error.message = %q, want it to say %q", body.Error.Message, wantMsg)
	}

	// What the SDK makes of it. go-sdk v1.8.0 treats 429 (like 500, 502,
	// 503, 504) as a transient transport failure and returns before it
	// decodes the body (streamableClientConn.checkResponse,
	// isTransientHTTPStatus), so the JSON-RPC message does not reach the
	// caller — only the status text does. It does keep the session usable.
	t.Logf("SDK error: %v", callErr)
	if !strings.Contains(callErr.Error(), "tools/call") || !strings.Contains(callErr.Error(), http.StatusText(http.StatusTooManyRequests)) {
		t.Errorf("SDK error %q does not name tools/call and %q", callErr, http.StatusText(http.StatusTooManyRequests))
	}
	if strings.Contains(callErr.Error(), body.Error.Message) {
		t.Logf("the SDK now surfaces breakwater's JSON-RPC message: update this test and the README")
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 1}}); err != nil {
		t.Errorf("the session broke after a 429: %v", err)
	}
}

// callSlowReport calls slow_report and checks that its progress
// notifications arrived one by one while it ran.
func callSlowReport(ctx context.Context, t *testing.T, cs *mcp.ClientSession, progress *progressLog, w *wire) {
	t.Helper()
	params := &mcp.CallToolParams{Name: "slow_report", Arguments: map[string]any{}}
	params.SetProgressToken("report-" + t.Name())
	start := progress.begin()
	res, err := cs.CallTool(ctx, params)
	returned := time.Since(start)
	if err != nil {
		t.Fatalf("tools/call slow_report: %v", err)
	}
	if res.IsError {
		t.Fatalf("slow_report failed: %s", textOf(res))
	}
	at := progress.arrivals()
	t.Logf("progress notifications arrived at %v; the call returned at %v", at, returned.Round(time.Millisecond))
	if len(at) != progressSteps {
		t.Fatalf("%d progress notifications, want %d", len(at), progressSteps)
	}
	// slow_report waited for each notification to reach the client before
	// the next, and slept progressGap between them: so the first one
	// arrived at least (steps-1)×gap before the result. A proxy that
	// buffered the stream would have failed the call above.
	if lead := returned - at[0]; lead < time.Duration(progressSteps-1)*progressGap*3/4 {
		t.Errorf("first progress notification arrived only %v before the result", lead)
	}
	post := w.find(func(e *exchange) bool { return e.rpcMethod() == "tools/call" && e.rpcName() == "slow_report" })
	if ct := post.resp.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("slow_report answered with Content-Type %q, want an SSE stream", ct)
	}
}

func checkTools(ctx context.Context, t *testing.T, cs *mcp.ClientSession, want ...string) {
	t.Helper()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	have := map[string]bool{}
	for _, tool := range res.Tools {
		have[tool.Name] = true
	}
	for _, name := range want {
		if !have[name] {
			t.Errorf("tools/list lacks %s", name)
		}
	}
}

// --- the MCP server ---

// mcpServer is an MCP server from the SDK on a loopback port; it records
// every HTTP request that reaches it.
type mcpServer struct {
	*mcp.Server
	url string
	// acks carries progress the client has received, back to slow_report.
	acks chan float64

	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	method string
	header http.Header
}

type addArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

type addResult struct {
	Sum int `json:"sum"`
}

func addTwo(_ context.Context, _ *mcp.CallToolRequest, in addArgs) (*mcp.CallToolResult, addResult, error) {
	return nil, addResult{Sum: in.A + in.B}, nil
}

type queryArgs struct {
	Query string `json:"query"`
}

func newMCPServer(t *testing.T, stateless bool) *mcpServer {
	s := &mcpServer{acks: make(chan float64, progressSteps)}
	s.Server = mcp.NewServer(&mcp.Implementation{Name: "e2e-server", Version: "v1"}, nil)
	mcp.AddTool(s.Server, &mcp.Tool{Name: "add", Description: "adds a and b"}, addTwo)
	mcp.AddTool(s.Server, &mcp.Tool{Name: "expensive_tool", Description: "costly: rate limited by breakwater"},
		func(context.Context, *mcp.CallToolRequest, queryArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "expensive answer"}}}, nil, nil
		})
	mcp.AddTool(s.Server, &mcp.Tool{Name: "slow_report", Description: "reports progress while it works"}, s.slowReport)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.Server }, &mcp.StreamableHTTPOptions{Stateless: stateless})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, seenRequest{r.Method, r.Header.Clone()})
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

// slowReport sends progressSteps notifications progressGap apart. After
// each it waits until the client has it: through a proxy that held the
// stream back, the call fails instead of passing by luck of timing.
func (s *mcpServer) slowReport(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
	token := req.Params.GetProgressToken()
	if token == nil {
		return nil, nil, errors.New("slow_report needs a progress token")
	}
	for i := 1; i <= progressSteps; i++ {
		if i > 1 {
			select {
			case <-time.After(progressGap):
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
			ProgressToken: token, Progress: float64(i), Total: progressSteps, Message: fmt.Sprintf("step %d of %d", i, progressSteps),
		})
		if err != nil {
			return nil, nil, err
		}
		select {
		case <-s.acks:
		case <-time.After(ackTimeout):
			return nil, nil, fmt.Errorf("progress %d/%d has not reached the client after %v: the stream is held back", i, progressSteps, ackTimeout)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "report ready"}}}, nil, nil
}

// saw reports whether a request with method and Mcp-Session-Id reached the server.
func (s *mcpServer) saw(method, sessionID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.seen {
		if r.method == method && r.header.Get("Mcp-Session-Id") == sessionID {
			return true
		}
	}
	return false
}

// sawHeaders reports whether one request carried all of want.
func (s *mcpServer) sawHeaders(want map[string]string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, r := range s.seen {
		for k, v := range want {
			if r.header.Get(k) != v {
				continue next
			}
		}
		return true
	}
	return false
}

// progressLog records when progress notifications reach the client and
// acknowledges each to slow_report.
type progressLog struct {
	acks chan<- float64

	mu    sync.Mutex
	start time.Time
	at    []time.Duration
}

func (p *progressLog) begin() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start, p.at = time.Now(), nil
	return p.start
}

func (p *progressLog) handle(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	p.mu.Lock()
	p.at = append(p.at, time.Since(p.start).Round(time.Millisecond))
	p.mu.Unlock()
	select {
	case p.acks <- req.Params.Progress:
	default:
	}
}

func (p *progressLog) arrivals() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.at...)
}

// --- the client's side of the wire ---

// wire is the MCP client's HTTP transport: it records every exchange with
// breakwater, with request bodies and the bodies of error responses (a 2xx
// may be a stream, and is left alone).
type wire struct {
	base *http.Transport

	mu  sync.Mutex
	log []*exchange
}

type exchange struct {
	method   string
	req      http.Header
	reqBody  []byte
	status   int
	resp     http.Header
	respBody []byte // for status 300 and above
}

func newWire(t *testing.T) *wire {
	w := &wire{base: &http.Transport{}}
	t.Cleanup(w.base.CloseIdleConnections)
	return w
}

func (w *wire) client() *http.Client { return &http.Client{Transport: w} }

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	ex := &exchange{method: r.Method, req: r.Header.Clone()}
	if r.GetBody != nil {
		if b, err := r.GetBody(); err == nil {
			ex.reqBody, _ = io.ReadAll(b)
			b.Close()
		}
	}
	resp, err := w.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	ex.status, ex.resp = resp.StatusCode, resp.Header.Clone()
	if resp.StatusCode >= 300 {
		ex.respBody, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(ex.respBody))
	}
	w.mu.Lock()
	w.log = append(w.log, ex)
	w.mu.Unlock()
	return resp, nil
}

// find returns the first exchange that satisfies ok, or nil.
func (w *wire) find(ok func(*exchange) bool) *exchange {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.log {
		if ok(e) {
			return e
		}
	}
	return nil
}

func (w *wire) waitFor(t *testing.T, d time.Duration, what string, ok func(*exchange) bool) *exchange {
	t.Helper()
	var e *exchange
	testkit.WaitFor(t, d, what, func() bool { e = w.find(ok); return e != nil })
	return e
}

func (e *exchange) rpc() (msg struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Name string `json:"name"`
	} `json:"params"`
}) {
	_ = json.Unmarshal(e.reqBody, &msg)
	return msg
}

func (e *exchange) rpcMethod() string      { return e.rpc().Method }
func (e *exchange) rpcName() string        { return e.rpc().Params.Name }
func (e *exchange) rpcID() json.RawMessage { return e.rpc().ID }

// routeOf names the breakwater route that answered: every route in the
// example has a rate limit, whose RateLimit-Policy header carries its name.
func routeOf(e *exchange) string {
	if e == nil {
		return ""
	}
	name, _, _ := strings.Cut(e.resp.Get("RateLimit-Policy"), ";")
	return strings.Trim(name, `"`)
}

func sumOf(t *testing.T, res *mcp.CallToolResult) int {
	t.Helper()
	b, _ := json.Marshal(res.StructuredContent)
	var out addResult
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return out.Sum
}

func textOf(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, " ")
}

// --- the breakwater process ---

// startBreakwater runs the built binary with this directory's
// breakwater.yaml, pointed at upstream, on free loopback ports, and waits
// for /readyz. It is stopped with SIGTERM when the test ends.
func startBreakwater(t *testing.T, upstream string) *testkit.Breakwater {
	t.Helper()
	bw := testkit.StartBreakwater(t, 20*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(breakwaterBin, "-config", "breakwater.yaml", "-listen", listen, "-admin", admin)
		cmd.Env = append(os.Environ(), "MCP_SERVER_URL="+upstream)
		return cmd
	})
	t.Cleanup(func() { stopBreakwater(t, bw) })
	return bw
}

// stopBreakwater ends breakwater as Kubernetes would, with SIGTERM, and
// wants exit code 0 within 15 s. Its log is shown in -v runs (and, as
// for every process testkit starts, when the test failed).
func stopBreakwater(t *testing.T, bw *testkit.Breakwater) {
	_ = bw.Cmd.Process.Signal(syscall.SIGTERM)
	if code := bw.ExitCode(t, 15*time.Second); code != 0 {
		t.Errorf("breakwater exited with code %d after SIGTERM", code)
	}
	if testing.Verbose() && !t.Failed() {
		t.Logf("breakwater's log:\n%s", bw.Out.String())
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
