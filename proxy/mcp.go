package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// What breakwater knows of MCP and JSON-RPC traffic: a request's method
// and tool (for routing, logs and metrics), and which of an upstream's
// tools may be called twice (for retry.tools: annotated).

// rpcCall is a JSON-RPC request's method and, for tools/call, its tool.
type rpcCall struct {
	method, tool string
}

// maxToolName bounds a tool name breakwater keeps or labels with: MCP's
// own limit is 128 characters, and the name is the client's text.
const maxToolName = 128

// callFromHeaders learns the call from Mcp-Method / Mcp-Name, which MCP
// clients send on every POST since protocol 2026-07-28. Mcp-Name names a
// tool only for tools/call (for resources/read it is a URI).
func callFromHeaders(h http.Header) (rpcCall, bool) {
	m := h["Mcp-Method"]
	if len(m) == 0 || m[0] == "" {
		return rpcCall{}, false
	}
	c := rpcCall{method: m[0]}
	if c.method == "tools/call" {
		if n := h["Mcp-Name"]; len(n) > 0 {
			c.tool = n[0]
		}
	}
	return c, true
}

// learnBody records what a buffered JSON body says: the JSON-RPC id (for
// error answers, unless errors is problem) and the call, unless headers
// already told it.
func (rq *request) learnBody(buf []byte, answerRPC bool) {
	rpc, call := parseJSONRPC(buf)
	if answerRPC {
		rq.rpc = rpc
	}
	if !rq.callKnown {
		rq.call, rq.callKnown = call, true
	}
}

// readCall reads a JSON POST's body, up to limit, before routing, for a
// route that matches on jsonrpc_method or tool and a client that sent no
// Mcp-Method header. The body is put back for whoever reads it next. It
// returns the body's failure (too large for max_body, broken, stalled);
// a body over limit just teaches nothing.
func readCall(r *http.Request, rq *request, limit int64) error {
	rq.callKnown = true // once, whatever happens
	if !mayBeJSONRPC(r) || r.ContentLength > limit {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		cause := rq.bodyFailure()
		if cause == nil {
			cause = bodyError(err)
		}
		if errors.Is(cause, errBodyStalled) {
			rq.rpc = partialJSONRPC(buf) // answered in JSON-RPC if its id came first
		}
		return cause
	}
	if int64(len(buf)) > limit {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	rq.rpc, rq.call = parseJSONRPC(buf)
	r.Body = readCloser{bytes.NewReader(buf), r.Body}
	return nil
}

// toolLabels bounds the metrics' tool label: the tools the config names,
// then the first max others seen, then "other". It outlives reloads (a
// label once given stays given, so series never flap); lookups take no
// lock.
type toolLabels struct {
	named atomic.Pointer[map[string]bool]
	max   atomic.Int64
	mu    sync.Mutex
	seen  atomic.Pointer[map[string]bool] // copy on write
}

// configure takes a config's named tools and max_tools.
func (l *toolLabels) configure(named []string, max int) {
	m := make(map[string]bool, len(named))
	for _, n := range named {
		m[n] = true
	}
	l.named.Store(&m)
	l.max.Store(int64(max))
}

// label is tool's label value ("" for a request that calls no tool).
func (l *toolLabels) label(tool string) string {
	if tool == "" {
		return ""
	}
	if n := l.named.Load(); n != nil && (*n)[tool] {
		return tool
	}
	if s := l.seen.Load(); s != nil && (*s)[tool] {
		return tool
	}
	if len(tool) > maxToolName || !utf8.ValidString(tool) {
		return "other"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.seen.Load()
	if old != nil && (*old)[tool] {
		return tool
	}
	if old != nil && int64(len(*old)) >= l.max.Load() {
		return "other"
	}
	next := make(map[string]bool, 1+lenOf(old))
	if old != nil {
		for k := range *old {
			next[k] = true
		}
	}
	next[tool] = true
	l.seen.Store(&next)
	return tool
}

// clip bounds a client's text in the access log.
func clip(s string) string {
	if len(s) > maxToolName {
		return s[:maxToolName]
	}
	return s
}

func lenOf(m *map[string]bool) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// toolHints are the tools of one upstream that its latest tools/list
// marked readOnlyHint or idempotentHint: those a tools/call may retry
// under retry.tools: annotated. Each list replaces the one before.
type toolHints struct {
	safe atomic.Pointer[map[string]bool]
}

// maxToolsList bounds the tools/list response kept for reading hints: a
// larger list passes through untouched and teaches nothing.
const maxToolsList = 1 << 20

// maxHintedTools bounds the names one list may teach.
const maxHintedTools = 4096

// repeatable reports whether tool was marked safe to call twice.
func (h *toolHints) repeatable(tool string) bool {
	m := h.safe.Load()
	return m != nil && (*m)[tool]
}

// watch wraps a tools/list response's body so that the list is read as it
// passes to the client. The client gets every byte as it arrives; the
// copy kept is bounded by maxToolsList.
func (h *toolHints) watch(resp *http.Response) {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || (mt != "application/json" && mt != "text/event-stream") {
		return
	}
	resp.Body = &listTap{rc: resp.Body, hints: h, sse: mt == "text/event-stream"}
}

// listTap copies a tools/list response while it streams through and reads
// the hints from it once it ends. A JSON answer is read at EOF; an SSE
// stream event by event, since MCP servers may keep it open afterwards.
type listTap struct {
	rc    io.ReadCloser
	hints *toolHints
	sse   bool
	buf   []byte
	over  bool // more than maxToolsList: give up
	done  bool
}

func (t *listTap) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if !t.done && !t.over {
		if len(t.buf)+n > maxToolsList {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, p[:n]...)
			if t.sse {
				t.scanEvents()
			}
		}
	}
	if err == io.EOF && !t.done && !t.over && !t.sse {
		t.done = t.hints.learn(t.buf)
		t.buf = nil
	}
	return n, err
}

// scanEvents reads each complete SSE event's data as a JSON-RPC message;
// the first that holds a tools list ends the watch.
func (t *listTap) scanEvents() {
	for {
		i := bytes.Index(t.buf, []byte("\n\n"))
		j := bytes.Index(t.buf, []byte("\r\n\r\n"))
		end, skip := i, 2
		if j >= 0 && (i < 0 || j < i) {
			end, skip = j, 4
		}
		if end < 0 {
			return
		}
		var data []byte
		sc := bufio.NewScanner(bytes.NewReader(t.buf[:end]))
		sc.Buffer(nil, maxToolsList)
		for sc.Scan() {
			line := sc.Bytes()
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
				data = append(data, '\n')
			}
		}
		t.buf = t.buf[end+skip:]
		if len(data) > 0 && t.hints.learn(data) {
			t.done, t.buf = true, nil
			return
		}
	}
}

func (t *listTap) Close() error { return t.rc.Close() }

// learn reads a JSON-RPC response to tools/list and, if it is one,
// replaces the hints; it reports whether it was.
func (h *toolHints) learn(body []byte) bool {
	var msg struct {
		Result *struct {
			Tools []struct {
				Name        string `json:"name"`
				Annotations *struct {
					ReadOnly   bool `json:"readOnlyHint"`
					Idempotent bool `json:"idempotentHint"`
				} `json:"annotations"`
			} `json:"tools"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &msg) != nil || msg.Result == nil || msg.Result.Tools == nil {
		return false
	}
	safe := map[string]bool{}
	for _, tool := range msg.Result.Tools {
		if a := tool.Annotations; a != nil && (a.ReadOnly || a.Idempotent) && len(tool.Name) <= maxToolName && len(safe) < maxHintedTools {
			safe[tool.Name] = true
		}
	}
	h.safe.Store(&safe)
	return true
}
