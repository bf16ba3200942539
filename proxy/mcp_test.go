package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// toolServer is a real MCP server (the Go SDK's) whose every tool's first
// call fails with a 503, a retryable status, before the SDK sees it.
type toolServer struct {
	url   string
	mu    sync.Mutex
	calls map[string]int // tools/call POSTs that reached the upstream, by tool
}

func newToolServer(t *testing.T, jsonResponse bool) *toolServer {
	ts := &toolServer{calls: map[string]int{}}
	srv := mcp.NewServer(&mcp.Implementation{Name: "tools", Version: "v1"}, nil)
	answer := func(text string) mcp.ToolHandlerFor[struct{}, any] {
		return func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
		}
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "lookup", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, answer("found"))
	mcp.AddTool(srv, &mcp.Tool{Name: "upsert", Annotations: &mcp.ToolAnnotations{IdempotentHint: true}}, answer("stored"))
	mcp.AddTool(srv, &mcp.Tool{Name: "charge"}, answer("charged"))
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: jsonResponse})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			_, call := parseJSONRPC(body)
			if call.method == "tools/call" {
				ts.mu.Lock()
				ts.calls[call.tool]++
				first := ts.calls[call.tool] == 1
				ts.mu.Unlock()
				if first {
					http.Error(w, "warming up", http.StatusServiceUnavailable)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
	ts.url = up.URL
	return ts
}

// annotatedProxy is a proxy to up whose route retries tools/call by annotation.
func annotatedProxy(t *testing.T, up *toolServer, methods string) *testProxy {
	return startProxy(t, `
upstreams: { tools: { url: "{{UP}}" } }
routes:
  - name: mcp
    match: { path: /mcp }
    upstream: tools
    retry: { attempts: 3, tools: annotated, methods: {{M}}, backoff: { initial: 10ms, max: 50ms } }
`, map[string]string{"UP": up.url, "M": methods})
}

func (ts *toolServer) callsOf(tool string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.calls[tool]
}

// TestRetryByToolAnnotation: under retry.tools: annotated, a tools/call of
// a tool the upstream's tools/list marked readOnlyHint or idempotentHint
// is retried; an unannotated tool's call is sent once. The list is read
// from an SSE answer and from a JSON one.
func TestRetryByToolAnnotation(t *testing.T) {
	for _, jsonResponse := range []bool{false, true} {
		t.Run(fmt.Sprintf("json_response=%v", jsonResponse), func(t *testing.T) {
			up := newToolServer(t, jsonResponse)
			// POST is listed, yet the annotations decide for tools/call.
			p := annotatedProxy(t, up, "[GET, POST]")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v1"}, nil)
			cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: p.URL + "/mcp", HTTPClient: p.Client()}, nil)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer cs.Close()
			list, err := cs.ListTools(ctx, nil)
			if err != nil || len(list.Tools) != 3 {
				t.Fatalf("tools/list: %v, %+v", err, list)
			}
			for _, tool := range []string{"lookup", "upsert"} {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool})
				if err != nil || res.IsError {
					t.Errorf("%s: %v %+v, want its retry's answer", tool, err, res)
				}
				if n := up.callsOf(tool); n != 2 {
					t.Errorf("%s reached the upstream %d times, want 2 (retried)", tool, n)
				}
			}
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "charge"}); err == nil {
				t.Errorf("charge: no error, want the upstream's 503 passed through")
			}
			if n := up.callsOf("charge"); n != 1 {
				t.Errorf("charge reached the upstream %d times, want 1 (not annotated: sent once)", n)
			}
		})
	}
}

// Without a tools/list seen, no tool is known safe: every call is sent once.
func TestRetryByToolAnnotationNeedsTheList(t *testing.T) {
	up := newToolServer(t, true)
	p := annotatedProxy(t, up, "[GET, POST]")
	req := newRequest(t, http.MethodPost, p.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, _ := do(t, p.Client(), req)
	if resp.StatusCode != http.StatusServiceUnavailable || up.callsOf("lookup") != 1 {
		t.Errorf("status %d, %d calls; want the 503 of a single call", resp.StatusCode, up.callsOf("lookup"))
	}
}

// TestRouteByJSONRPCCall: match.jsonrpc_method and match.tool route by the
// Mcp-Method / Mcp-Name headers, or by the body when they are absent; the
// access log and the tool label say what was called, the label bounded by
// mcp.max_tools.
func TestRouteByJSONRPCCall(t *testing.T) {
	seen := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"upstream":%q,"body_len":%d}`, name, len(body))
		}
	}
	search, rest := startUpstream(t, seen("search")), startUpstream(t, seen("rest"))
	p := startProxy(t, `
mcp: { max_tools: 1 }
upstreams: { search: { url: "{{S}}" }, rest: { url: "{{R}}" } }
routes:
  - name: search
    match: { path: /mcp, jsonrpc_method: tools/call, tool: [search_posts] }
    upstream: search
  - name: lists
    match: { path: /mcp, jsonrpc_method: tools/list }
    upstream: search
  - name: mcp
    match: { path: /mcp }
    upstream: rest
`, map[string]string{"S": search.URL, "R": rest.URL})
	call := func(tool string, headers bool) string {
		body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"q":"x"}}}`
		req := newRequest(t, http.MethodPost, p.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if headers {
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header.Set("Mcp-Name", tool)
		}
		resp, got := do(t, p.Client(), req)
		var ans struct {
			Upstream string `json:"upstream"`
			BodyLen  int    `json:"body_len"`
		}
		if err := json.Unmarshal(got, &ans); err != nil || ans.BodyLen != len(body) {
			t.Fatalf("%s: %s (the whole body must reach the upstream)", tool, got)
		}
		testkit.WaitFor(t, 5*time.Second, "the access-log line", func() bool { return accessLine(t, p.logs, resp.Header.Get("X-Request-Id")) != nil })
		line := accessLine(t, p.logs, resp.Header.Get("X-Request-Id"))
		if line["rpc_method"] != "tools/call" || line["tool"] != tool {
			t.Errorf("access log rpc_method %v tool %v, want tools/call %s", line["rpc_method"], line["tool"], tool)
		}
		return ans.Upstream
	}
	for _, headers := range []bool{true, false} {
		if got := call("search_posts", headers); got != "search" {
			t.Errorf("search_posts (headers %v) went to %s, want search", headers, got)
		}
		if got := call("get_post", headers); got != "rest" {
			t.Errorf("get_post (headers %v) went to %s, want rest", headers, got)
		}
	}
	call("third_tool", false)
	list := newRequest(t, http.MethodPost, p.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	list.Header.Set("Content-Type", "application/json")
	if resp, got := do(t, p.Client(), list); !strings.Contains(string(got), `"search"`) {
		t.Errorf("tools/list: %d %s, want the lists route", resp.StatusCode, got)
	}
	if resp, got := p.get(t, "/mcp"); !strings.Contains(string(got), `"rest"`) {
		t.Errorf("GET: %d %s, want the mcp route", resp.StatusCode, got)
	}
	// search_posts is named in the config; get_post is the one other
	// max_tools allows; third_tool is "other".
	// Counted as each handler ends, which may be just after its client
	// has the answer.
	testkit.WaitFor(t, 5*time.Second, "requests counted by tool: search_posts 2, get_post 2, other 1, third_tool 0", func() bool {
		for tool, want := range map[string]float64{"search_posts": 2, "get_post": 2, "other": 1, "third_tool": 0} {
			if testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"tool": tool}) != want {
				return false
			}
		}
		return true
	})
}

// TestToolsListTap reads hints from the JSON and SSE forms, and keeps the
// old list when a body is not a tools list.
func TestToolsListTap(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","annotations":{"readOnlyHint":true}},{"name":"b"},{"name":"c","annotations":{"idempotentHint":true,"readOnlyHint":false}}]}}`
	for name, tc := range map[string]struct{ ctype, body string }{
		"json": {"application/json", list},
		"sse":  {"text/event-stream", "event: message\nid: 1\ndata: " + list + "\n\n"},
		"crlf": {"text/event-stream; charset=utf-8", ": ping\r\n\r\ndata: " + list + "\r\n\r\n"},
	} {
		h := &toolHints{}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ctype}}, Body: io.NopCloser(strings.NewReader(tc.body))}
		h.watch(resp)
		got, _ := io.ReadAll(resp.Body)
		if string(got) != tc.body {
			t.Errorf("%s: body changed in passing", name)
		}
		if !h.repeatable("a") || h.repeatable("b") || !h.repeatable("c") {
			t.Errorf("%s: hints a=%v b=%v c=%v, want true false true", name, h.repeatable("a"), h.repeatable("b"), h.repeatable("c"))
		}
		if h.learn([]byte(`{"jsonrpc":"2.0","id":2,"result":{}}`)) || !h.repeatable("a") {
			t.Errorf("%s: a result without tools replaced the list", name)
		}
		h.learn([]byte(`{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}`))
		if h.repeatable("a") {
			t.Errorf("%s: a new, empty list did not replace the old", name)
		}
	}
}

// The hints are the upstream's: a tools/list that went through another
// route to it teaches them too.
func TestToolHintsArePerUpstream(t *testing.T) {
	up := newToolServer(t, false)
	p := startProxy(t, `
upstreams: { tools: { url: "{{UP}}" } }
routes:
  - name: lists
    match: { path: /mcp, jsonrpc_method: tools/list }
    upstream: tools
    retry: off
  - name: mcp
    match: { path: /mcp }
    upstream: tools
    retry: { attempts: 3, tools: annotated, backoff: { initial: 10ms, max: 50ms } }
`, map[string]string{"UP": up.url})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v1"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: p.URL + "/mcp", HTTPClient: p.Client()}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	// Counted as the handler ends, which may be just after the client has
	// its answer.
	testkit.WaitFor(t, 5*time.Second, "tools/list counted on route lists", func() bool {
		return testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"route": "lists"}) == 1
	})
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "lookup"}); err != nil || res.IsError || up.callsOf("lookup") != 2 {
		t.Errorf("lookup: %v, %d calls; want its retry's answer", err, up.callsOf("lookup"))
	}
}

// The body read for a route that matches on the call is bounded by
// body_idle_timeout: a stalled JSON-RPC client gets 408 in JSON-RPC, and
// the upstream sees nothing.
func TestRouteByCallStalledBody(t *testing.T) {
	var hits atomic.Int32
	up := startUpstream(t, func(http.ResponseWriter, *http.Request) { hits.Add(1) })
	p := startProxy(t, `
server: { body_idle_timeout: 300ms }
upstreams: { up: { url: "{{UP}}" } }
routes:
  - name: search
    match: { path: /mcp, tool: [search] }
    upstream: up
`, map[string]string{"UP": up.URL})
	resp, body, closed := rawRequest(t, strings.TrimPrefix(p.URL, "http://"),
		"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n", `{"jsonrpc":"2.0","id":9,"method":"tools/call",`)
	var rr rpcReply
	if resp.StatusCode != http.StatusRequestTimeout || json.Unmarshal(body, &rr) != nil || string(rr.ID) != "9" || !closed {
		t.Errorf("got %d %s (closed %v), want 408 in JSON-RPC for id 9 and the connection closed", resp.StatusCode, body, closed)
	}
	if hits.Load() != 0 {
		t.Errorf("the upstream saw %d requests", hits.Load())
	}
}
