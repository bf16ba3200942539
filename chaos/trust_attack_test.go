package chaos

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The hostile reviewer's round on SPEC Part 3 "Trust": bodies that a
// lenient MCP server still executes as a tools/call but that breakwater
// could not read, so that the route meant for the tool never saw them.

// lenientServer is an MCP server as many real ones read a request: it
// ignores the method and the Content-Type, inflates a gzip body (as
// Express's express.json() does), drops a UTF-8 byte order mark (as
// Python's json.loads and Express do) and reads the first JSON value of
// the body (as a Go handler with json.NewDecoder(r.Body).Decode does),
// ignoring what follows. It counts the tools/call executions by tool.
func lenientServer(t *testing.T) (url string, executed func(tool string) int) {
	var mu sync.Mutex
	calls := map[string]int{}
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, "bad gzip", http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
		var m struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if json.NewDecoder(bytes.NewReader(raw)).Decode(&m) == nil && m.Method == "tools/call" {
			mu.Lock()
			calls[m.Params.Name]++
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	return up.URL, func(tool string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[tool]
	}
}

// TestTrustMCPUnreadableCallIsNotRoutedAsNoCall: delete_post may only go
// through the delete route, which wants a client key. A call breakwater
// cannot read (gzip), reads in no JSON content type (text/plain, none,
// GET with a body) or cannot parse strictly (a byte order mark, data
// after the object, NaN) must not fall through to the open route: either
// breakwater reads it and the delete route refuses it (401), or it is
// refused as unreadable (400 bad_request). The lenient server never
// executes delete_post.
func TestTrustMCPUnreadableCallIsNotRoutedAsNoCall(t *testing.T) {
	url, executed := lenientServer(t)
	keysFile := aliceKeysFile(t)
	b := startBW(t, `version: 1
clients: { keys_file: `+keysFile+` }
tiers: { free: { rate_limits: [100/1s] } }
upstreams: { blog: { url: `+url+` } }
routes:
  - name: delete
    match: { path: /mcp, tool: [delete_post] }
    upstream: blog
    client_auth: required
  - name: open
    match: { path: /mcp }
    upstream: blog
`)
	call := toolCall(1, "delete_post")
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = io.WriteString(zw, call)
	_ = zw.Close()

	hostile := []struct {
		name, method, body string
		headers            []string
	}{
		{"text/plain", http.MethodPost, call, []string{"Content-Type", "text/plain"}},
		{"no Content-Type", http.MethodPost, call, nil},
		{"text/plain, application/json", http.MethodPost, call, []string{"Content-Type", "text/plain, application/json"}},
		{"PUT", http.MethodPut, call, []string{"Content-Type", "application/json"}},
		{"gzip", http.MethodPost, zipped.String(), []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}},
		{"a byte order mark", http.MethodPost, "\xef\xbb\xbf" + call, []string{"Content-Type", "application/json"}},
		{"data after the object", http.MethodPost, call + ` {"jsonrpc":"2.0"}`, []string{"Content-Type", "application/json"}},
		{"NaN in the arguments", http.MethodPost, strings.Replace(call, `"post":1`, `"post":NaN`, 1), []string{"Content-Type", "application/json"}},
	}
	for _, tc := range hostile {
		before := executed("delete_post")
		req, _ := http.NewRequest(tc.method, b.URL+"/mcp", strings.NewReader(tc.body))
		for i := 0; i+1 < len(tc.headers); i += 2 {
			req.Header.Set(tc.headers[i], tc.headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		kind := resp.Header.Get("X-Breakwater-Error")
		t.Logf("%s: %d %s, delete_post executed %d times", tc.name, resp.StatusCode, kind, executed("delete_post")-before)
		if executed("delete_post") != before {
			t.Errorf("%s: delete_post executed without a key, through the open route (%d %s)", tc.name, resp.StatusCode, got)
		}
		if !(resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusBadRequest && kind == "bad_request") {
			t.Errorf("%s: %d %s %s; want 401 from the delete route or 400 bad_request", tc.name, resp.StatusCode, kind, got)
		}
	}

	// Honest traffic still flows: a plain JSON call of another tool and
	// a body that is no JSON at all go to the open route.
	for _, body := range []string{toolCall(2, "search"), "hello"} {
		status, kind, got := rpcPost(t, b.URL+"/mcp", body)
		if status != http.StatusOK {
			t.Errorf("%q: %d %s %s, want the open route's 200", body, status, kind, got)
		}
	}
}

// TestTrustForgedClientIDUnderAnotherSpelling: on an optional route with
// forward_client_id, an anonymous caller's X-Client-Id is dropped; so must
// be the same header spelled with underscores (X_Client_Id), which a CGI
// or WSGI server (gunicorn before 22, PHP) reads as the same variable,
// HTTP_X_CLIENT_ID. The upstream here reads headers as such a server does.
func TestTrustForgedClientIDUnderAnotherSpelling(t *testing.T) {
	var mu sync.Mutex
	var seen []string // the HTTP_X_CLIENT_ID values the upstream saw
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for k, v := range r.Header {
			if strings.ToUpper(strings.ReplaceAll(k, "-", "_")) == "X_CLIENT_ID" {
				seen = append(seen, v...)
			}
		}
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	keysFile := aliceKeysFile(t)
	b := startBW(t, `version: 1
clients: { keys_file: `+keysFile+` }
tiers: { free: { rate_limits: [100/1s] } }
upstreams: { api: { url: `+up.URL+` } }
routes:
  - name: api
    match: { path: / }
    upstream: api
    client_auth: optional
    forward_client_id: X-Client-Id
`)
	for _, name := range []string{"X-Client-Id", "X_Client_Id", "X_CLIENT_ID", "x_client-id"} {
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/", nil)
		req.Header[name] = []string{"alice"}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mu.Lock()
		t.Logf("%s: %d, the upstream read HTTP_X_CLIENT_ID %q", name, resp.StatusCode, seen)
		if resp.StatusCode != http.StatusOK || len(seen) > 0 {
			t.Errorf("anonymous caller's %s: %d, the upstream read HTTP_X_CLIENT_ID %q; want 200 and nothing", name, resp.StatusCode, seen)
		}
		seen = nil
		mu.Unlock()
	}
}

// aliceKeysFile is a keys file with one client, alice, of tier free.
func aliceKeysFile(t *testing.T) string {
	t.Helper()
	keysFile := filepath.Join(t.TempDir(), "clients.yaml")
	if err := exec.Command(binary, "keys", "new", "-id", "alice", "-tier", "free", "-file", keysFile).Run(); err != nil {
		t.Fatalf("keys new: %v", err)
	}
	return keysFile
}
