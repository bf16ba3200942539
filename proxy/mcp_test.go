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
	bwmcp "github.com/breakwater-proxy/breakwater/mcp"
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
			b, _ := bwmcp.Read(body)
			if tool := b.Single().Tool(); tool != "" {
				ts.mu.Lock()
				ts.calls[tool]++
				first := ts.calls[tool] == 1
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
// body, with or without Mcp-Method / Mcp-Name headers that agree with it;
// the access log and the tool label say what was called, the label one of
// the config's tools or of the tools/list answer, bounded by mcp.max_tools.
func TestRouteByJSONRPCCall(t *testing.T) {
	seen := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			if b, _ := bwmcp.Read(body); b.Single().Method == "tools/list" {
				fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"get_post"},{"name":"third_tool"}],"upstream":%q}}`, b.Single().ID, name)
				return
			}
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
	list := newRequest(t, http.MethodPost, p.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	list.Header.Set("Content-Type", "application/json")
	if resp, got := do(t, p.Client(), list); !strings.Contains(string(got), `"search"`) {
		t.Errorf("tools/list: %d %s, want the lists route", resp.StatusCode, got)
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
	if resp, got := p.get(t, "/mcp"); !strings.Contains(string(got), `"rest"`) {
		t.Errorf("GET: %d %s, want the mcp route", resp.StatusCode, got)
	}
	// search_posts is named in the config; get_post is the first tool of
	// the list, the one max_tools allows; third_tool is "other".
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

// postRPC posts a JSON body to path, with Mcp-* headers given as name,
// value pairs.
func (p *testProxy) postRPC(t *testing.T, path, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req := newRequest(t, http.MethodPost, p.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, p.Client(), req)
}

func toolsCall(id int, tool string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q}}`, id, tool)
}

// TestToolLabelsComeFromConfigAndLists (issue 19, defect 13): unrouted
// requests naming 55 junk tools (in Mcp-Name and the body) take no label,
// and routed calls of tools nobody listed are "other": the tool label
// slots (mcp.max_tools, 50) go to the tools the upstream's tools/list
// named, here get_post.
func TestToolLabelsComeFromConfigAndLists(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		m, _ := bwmcp.Read(body)
		if m.Single().Method == "tools/list" {
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"get_post"}]}}`, m.Single().ID)
			return
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{}}`, m.Single().ID)
	})
	p := startProxy(t, `
upstreams: { blog: { url: "{{UP}}" } }
routes:
  - name: lists
    match: { path: /mcp, jsonrpc_method: tools/list }
    upstream: blog
  - name: mcp
    match: { path: /mcp }
    upstream: blog
`, map[string]string{"UP": up.URL})
	for i := range 55 {
		junk := fmt.Sprintf("junk-%d", i)
		if resp, _ := p.postRPC(t, "/nowhere", toolsCall(i, junk), "Mcp-Method", "tools/call", "Mcp-Name", junk); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("unrouted call: %d", resp.StatusCode)
		}
	}
	for i := range 5 {
		p.postRPC(t, "/mcp", toolsCall(100+i, fmt.Sprintf("unlisted-%d", i)))
	}
	p.postRPC(t, "/mcp", `{"jsonrpc":"2.0","id":"l","method":"tools/list"}`)
	testkit.WaitFor(t, 5*time.Second, "the tools/list counted", func() bool {
		return testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"route": "lists"}) == 1
	})
	p.postRPC(t, "/mcp", toolsCall(200, "get_post"))
	want := map[string]float64{"get_post": 1, "other": 5, "junk-0": 0, "unlisted-0": 0}
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("requests counted by tool: %v", want), func() bool {
		for tool, n := range want {
			if testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"tool": tool}) != n {
				return false
			}
		}
		return true
	})
	if n := testkit.SumMetric(t, p.metrics.Registry, "breakwater_requests_total", map[string]string{"route": "", "tool": ""}); n != 55 {
		t.Errorf("%v unrouted requests without a tool label, want 55", n)
	}
}

// TestJSONRPCBatches: refused by default (TestErrorKindsAndForms); under
// mcp.batches: allow a batch matches a tool route only when every element
// does, takes a rate-limit token per element, and is never retried.
func TestJSONRPCBatches(t *testing.T) {
	var hits sync.Map // route header → *atomic.Int32
	count := func(name string) *atomic.Int32 {
		v, _ := hits.LoadOrStore(name, new(atomic.Int32))
		return v.(*atomic.Int32)
	}
	failing := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			count(name).Add(1)
			http.Error(w, "lost", http.StatusServiceUnavailable)
		}
	}
	search, open := startUpstream(t, failing("search")), startUpstream(t, failing("open"))
	p := startProxy(t, `
mcp: { batches: allow }
upstreams: { search: { url: "{{S}}" }, open: { url: "{{O}}" } }
routes:
  - name: search
    match: { path: /mcp, tool: [search] }
    upstream: search
    rate_limit: { rate: 3/1m, burst: 3 }
    retry: { attempts: 3, methods: [POST], backoff: { initial: 10ms, max: 20ms } }
  - name: mcp
    match: { path: /mcp }
    upstream: open
    retry: { attempts: 3, methods: [POST], backoff: { initial: 10ms, max: 20ms } }
`, map[string]string{"S": search.URL, "O": open.URL})
	two := `[` + toolsCall(1, "search") + `,` + toolsCall(2, "search") + `]`
	if resp, body := p.postRPC(t, "/mcp", two); resp.StatusCode != http.StatusServiceUnavailable || count("search").Load() != 1 {
		t.Errorf("a batch of two searches: %d %s, %d attempts; want the upstream's 503 after one (a batch is never retried)", resp.StatusCode, body, count("search").Load())
	}
	if resp, body := p.postRPC(t, "/mcp", two); resp.StatusCode != http.StatusTooManyRequests || count("search").Load() != 1 {
		t.Errorf("a second batch of two, with one token left of 3: %d %s; want 429", resp.StatusCode, body)
	}
	mixed := `[` + toolsCall(3, "search") + `,` + toolsCall(4, "delete_post") + `]`
	if resp, _ := p.postRPC(t, "/mcp", mixed); resp.StatusCode != http.StatusServiceUnavailable || count("open").Load() != 1 {
		t.Errorf("a batch of search and delete_post: %d, %d attempts on the open route; want its 503 after one", resp.StatusCode, count("open").Load())
	}
	if resp, _ := p.postRPC(t, "/mcp", toolsCall(5, "other")); resp.StatusCode != http.StatusServiceUnavailable || count("open").Load() != 4 {
		t.Errorf("a single call on the open route: %d, %d attempts in all; want 1 + 3 (a single POST is retried there)", resp.StatusCode, count("open").Load())
	}
}
