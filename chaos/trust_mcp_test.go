package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// The trust suite for MCP (issue 19, SPEC.md Part 3 "Trust"): the
// JSON-RPC body, not the client's headers, decides the route, the retry,
// the limits and the labels; and tool annotations are learned only from
// the answer to a tools/list breakwater saw asked.

// blogServer is an MCP server as the Python and TypeScript SDKs read a
// request: exact-case keys, the last of two equal keys wins, every element
// of a batch is executed. Each tools/call acts (it is counted), then the
// answer is lost: 503, which a retrying route sends again. /echo is a REST
// endpoint on the same upstream that answers with the request's body.
type blogServer struct {
	url string
	mu  sync.Mutex
	// list is the tools/list answer's "tools" array; a tools/list whose
	// params.cursor is "lie" is answered for another id.
	list     string
	executed map[string]int // tools/call executions by tool
}

func newBlogServer(t *testing.T, list string) *blogServer {
	s := &blogServer{list: list, executed: map[string]int{}}
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/echo" {
			_, _ = w.Write(body)
			return
		}
		var msgs []map[string]json.RawMessage
		if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
			_ = json.Unmarshal(body, &msgs)
		} else {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(body, &m)
			msgs = append(msgs, m)
		}
		status, answer := http.StatusAccepted, ""
		for _, m := range msgs {
			var method string
			_ = json.Unmarshal(m["method"], &method)
			var params map[string]json.RawMessage
			_ = json.Unmarshal(m["params"], &params)
			switch method {
			case "tools/call":
				var name string
				_ = json.Unmarshal(params["name"], &name)
				s.mu.Lock()
				s.executed[name]++
				s.mu.Unlock()
				status = http.StatusServiceUnavailable
			case "tools/list":
				id := string(m["id"])
				if string(params["cursor"]) == `"lie"` {
					id = "424242"
				}
				s.mu.Lock()
				status, answer = http.StatusOK, `{"jsonrpc":"2.0","id":`+id+`,"result":{"tools":`+s.list+`}}`
				s.mu.Unlock()
			}
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	s.url = up.URL
	return s
}

func (s *blogServer) setList(list string) {
	s.mu.Lock()
	s.list = list
	s.mu.Unlock()
}

func (s *blogServer) calls(tool string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.executed[tool]
}

// rpcPost posts body to url with the given headers and returns the status,
// X-Breakwater-Error and body.
func rpcPost(t *testing.T, url, body string, headers ...string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), got
}

func toolCall(id int, tool string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"post":1}}}`, id, tool)
}

// TestTrustMCPBodyDecides (issue 19, defect 2): a tools/call of
// delete_post may only go through the delete route, which wants a client
// key and is never retried. A client that names another tool in the
// Mcp-Name header, repeats "name" in another letter case (Go's decoder
// folds case, the SDKs' servers do not), or wraps the call in a batch,
// gets 400 bad_request (JSON-RPC -32600), and delete_post is never
// executed; the metrics never say tool="search" for it. Headers on a
// request without a JSON-RPC body choose nothing.
func TestTrustMCPBodyDecides(t *testing.T) {
	up := newBlogServer(t, `[]`)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "clients.yaml")
	out, err := exec.Command(binary, "keys", "new", "-id", "alice", "-tier", "free", "-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys new: %v", err)
	}
	aliceKey := strings.TrimSpace(string(out))
	b := startBW(t, fmt.Sprintf(`version: 1
clients: { keys_file: %s }
tiers: { free: { rate_limits: [100/1s] } }
upstreams: { blog: { url: %s } }
routes:
  - name: delete
    match: { path: /mcp, tool: [delete_post] }
    upstream: blog
    client_auth: required
    retry: off
  - name: search
    match: { path: /mcp, tool: [search] }
    upstream: blog
    retry: { attempts: 3, methods: [GET, POST], backoff: { initial: 10ms, max: 20ms } }
  - name: open
    match: { path: /mcp }
    upstream: blog
    retry: { attempts: 3, methods: [GET, POST], backoff: { initial: 10ms, max: 20ms } }
`, keysFile, up.url))

	hostile := []struct {
		name    string
		body    string
		headers []string
		id      string // the JSON-RPC id the 400 carries
		names   string // what the detail must name, if anything
	}{
		{"Mcp-Name names another tool", toolCall(1, "delete_post"), []string{"Mcp-Method", "tools/call", "Mcp-Name", "search"}, "1", "Mcp-Name"},
		{"Mcp-Method names another method", toolCall(2, "delete_post"), []string{"Mcp-Method", "tools/list"}, "2", "Mcp-Method"},
		{"name repeated in upper case", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_post","NAME":"search"}}`, nil, "3", ""},
		{"name repeated exactly", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"search","name":"delete_post"}}`, nil, "4", ""},
		{"method in another case", `{"jsonrpc":"2.0","id":5,"Method":"tools/call","params":{"name":"delete_post"}}`, nil, "5", ""},
		{"a batch", `[` + toolCall(6, "delete_post") + `]`, nil, "null", ""},
		{"a batch with the headers of its first element", `[` + toolCall(7, "search") + `,` + toolCall(8, "delete_post") + `]`, []string{"Mcp-Method", "tools/call", "Mcp-Name", "search"}, "null", ""},
	}
	for _, tc := range hostile {
		status, kind, body := rpcPost(t, b.URL+"/mcp", tc.body, tc.headers...)
		var reply struct {
			ID    json.RawMessage `json:"id"`
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &reply)
		t.Logf("%s: %d %s, upstream executed delete_post %d times in all", tc.name, status, kind, up.calls("delete_post"))
		if status != http.StatusBadRequest || kind != "bad_request" || reply.Error.Code != -32600 || string(reply.ID) != tc.id {
			t.Errorf("%s: %d %s %s; want 400 bad_request, JSON-RPC -32600 with id %s", tc.name, status, kind, body, tc.id)
		}
		if tc.names != "" && !strings.Contains(reply.Error.Message, tc.names) {
			t.Errorf("%s: the error %q does not name the header %s", tc.name, reply.Error.Message, tc.names)
		}
	}
	if n := up.calls("delete_post"); n != 0 {
		t.Errorf("delete_post executed %d times by requests that had no key; want 0", n)
	}

	// The honest calls: delete_post without a key is refused by its own
	// route; with Alice's key it is sent once, however the upstream fails.
	if status, kind, _ := rpcPost(t, b.URL+"/mcp", toolCall(10, "delete_post")); status != http.StatusUnauthorized {
		t.Errorf("delete_post without a key: %d %s, want 401 from the delete route", status, kind)
	}
	if status, _, _ := rpcPost(t, b.URL+"/mcp", toolCall(11, "delete_post"), "Authorization", "Bearer "+aliceKey,
		"Mcp-Method", "tools/call", "Mcp-Name", "delete_post"); status != http.StatusServiceUnavailable || up.calls("delete_post") != 1 {
		t.Errorf("Alice's delete_post: %d, executed %d times; want the upstream's 503 after one execution", status, up.calls("delete_post"))
	}
	if status, _, _ := rpcPost(t, b.URL+"/mcp", toolCall(12, "search")); status != http.StatusServiceUnavailable || up.calls("search") != 3 {
		t.Errorf("search: %d, executed %d times; want 3 (its route retries)", status, up.calls("search"))
	}

	// Headers without a JSON-RPC body choose nothing: a GET that names the
	// search tool goes to the open route.
	req, _ := http.NewRequest(http.MethodGet, b.URL+"/mcp", nil)
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", "search")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	testkit.WaitFor(t, 5*time.Second, "every request counted", func() bool {
		return b.metric("breakwater_requests_total") == float64(len(hostile)+4)
	})
	if n := b.metric("breakwater_requests_total", `route="search"`); n != 1 {
		t.Errorf("route search counted %v requests, want 1 (the honest search)", n)
	}
	if n := b.metric("breakwater_requests_total", `route="open"`); n != 1 {
		t.Errorf("route open counted %v requests, want 1 (the GET)", n)
	}
	if n := b.metric("breakwater_requests_total", `tool="search"`); n != 1 {
		t.Errorf("tool=\"search\" counted %v requests, want 1 (the honest search)", n)
	}
	if n := b.metric("breakwater_requests_total", `tool="delete_post"`); n != 2 {
		t.Errorf("tool=\"delete_post\" counted %v requests, want 2 (the honest calls, refused and sent)", n)
	}
}

// TestTrustMCPAnnotationsFromAnswersAsked (issue 19, defect 4): the
// annotations that let retry.tools: annotated send a tools/call twice are
// learned only from a JSON-RPC response to a tools/list request body, with
// that request's id, on a route that reads the call. A client that posts a
// fake tools list to a REST echo route (with Mcp-Method: tools/list, or
// inside a request body) and an upstream that answers another id teach
// nothing: Alice's delete_post is sent once. The honest list does teach.
func TestTrustMCPAnnotationsFromAnswersAsked(t *testing.T) {
	honest := `[{"name":"delete_post"},{"name":"search","annotations":{"readOnlyHint":true}}]`
	up := newBlogServer(t, honest)
	b := startBW(t, fmt.Sprintf(`version: 1
upstreams: { blog: { url: %s } }
routes:
  - name: mcp
    match: { path: /mcp }
    upstream: blog
    retry: { attempts: 3, tools: annotated, backoff: { initial: 10ms, max: 20ms } }
  - name: echo
    match: { path: /echo }
    upstream: blog
`, up.url))
	fake := `{"tools":[{"name":"delete_post","annotations":{"readOnlyHint":true}}]}`
	hostile := []struct {
		name, path, body string
		headers          []string
	}{
		{"a fake list to the echo route, Mcp-Method: tools/list", "/echo", `{"jsonrpc":"2.0","id":1,"result":` + fake + `}`, []string{"Mcp-Method", "tools/list"}},
		{"a tools/list request to the echo route, answered with itself", "/echo", `{"jsonrpc":"2.0","id":1,"method":"tools/list","result":` + fake + `}`, nil},
		{"a tools/list whose answer carries another id", "/mcp", `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"lie"}}`, nil},
	}
	aliceCalls := 0
	for i, tc := range hostile {
		// Each lie starts from the honest list (delete_post not annotated),
		// where breakwater learns it.
		listTools(t, b, fmt.Sprintf(`"honest-%d"`, i))
		up.setList(`[{"name":"delete_post","annotations":{"readOnlyHint":true}}]`)
		before := b.metric("breakwater_requests_total")
		status, kind, _ := rpcPost(t, b.URL+tc.path, tc.body, tc.headers...)
		// The tap reads the answer as it ends; the request is counted after.
		testkit.WaitFor(t, 5*time.Second, "the hostile request counted", func() bool { return b.metric("breakwater_requests_total") > before })
		up.setList(honest)

		aliceCalls++
		rpcPost(t, b.URL+"/mcp", toolCall(100+aliceCalls, "delete_post"))
		t.Logf("%s (%d %s): Alice's delete_post then executed %d times", tc.name, status, kind, up.calls("delete_post")-aliceCalls+1)
		if n := up.calls("delete_post"); n != aliceCalls {
			t.Errorf("%s: Alice's delete_post executed %d times; want once (sent once, not annotated)", tc.name, n-aliceCalls+1)
			aliceCalls = n
		}
	}

	// The honest list, asked on the MCP route, teaches: search is retried,
	// delete_post is still sent once.
	listTools(t, b, `"list-1"`)
	rpcPost(t, b.URL+"/mcp", toolCall(200, "search"))
	if n := up.calls("search"); n != 3 {
		t.Errorf("search, readOnlyHint in the honest list: executed %d times, want 3 (retried)", n)
	}
	rpcPost(t, b.URL+"/mcp", toolCall(201, "delete_post"))
	if n := up.calls("delete_post"); n != aliceCalls+1 {
		t.Errorf("delete_post after the honest list: executed %d more times, want 1", n-aliceCalls)
	}
}

// listTools asks for the tools list on the MCP route, with Mcp-Method as a
// 2026-07-28 client sends it, and waits until the request is counted (the
// list is read as its answer ends).
func listTools(t *testing.T, b *bw, id string) {
	t.Helper()
	before := b.metric("breakwater_requests_total")
	if status, _, body := rpcPost(t, b.URL+"/mcp", `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/list"}`, "Mcp-Method", "tools/list"); status != http.StatusOK {
		t.Fatalf("tools/list: %d %s", status, body)
	}
	testkit.WaitFor(t, 5*time.Second, "the tools/list counted", func() bool { return b.metric("breakwater_requests_total") > before })
}
