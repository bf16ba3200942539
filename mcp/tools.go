package mcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync/atomic"
)

// MaxName bounds a tool name breakwater keeps or labels with: MCP's own
// limit is 128 characters.
const MaxName = 128

// maxList bounds the tools/list answer kept for reading: a larger one
// passes through untouched and teaches nothing.
const maxList = 1 << 20

// maxTools bounds the names one list may teach.
const maxTools = 4096

// Tools is what one upstream's latest tools/list answer said: which tools
// it marked readOnlyHint or idempotentHint, those a tools/call may retry
// under retry.tools: annotated. Each list replaces the one before. The
// zero value knows no tool safe.
type Tools struct {
	safe atomic.Pointer[map[string]bool]
}

// Repeatable reports whether tool was marked safe to call twice.
func (t *Tools) Repeatable(tool string) bool {
	m := t.safe.Load()
	return m != nil && (*m)[tool]
}

// Watch reads the answer to a tools/list request as it passes to the
// client: id is the request's id, and only a JSON-RPC response with that
// id (a result, no method) teaches. The client gets every byte as it
// arrives; the copy kept is bounded. The tools' names go to labels too
// (nil: nowhere).
//
// Only the answer to a request breakwater read itself is watched: a
// client's headers, a REST route's echo or a response to another id must
// not teach the annotations that decide retries (issue 19).
func (t *Tools) Watch(resp *http.Response, id json.RawMessage, labels *Labels) {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || (mt != "application/json" && mt != "text/event-stream") || !validID(id) {
		return
	}
	resp.Body = &listTap{rc: resp.Body, tools: t, labels: labels, id: id, sse: mt == "text/event-stream"}
}

// listTap copies a tools/list answer while it streams through and reads
// the list from it. A JSON answer is read at EOF; an SSE stream event by
// event, since MCP servers may keep it open afterwards, until the answer
// to id has come.
type listTap struct {
	rc     io.ReadCloser
	tools  *Tools
	labels *Labels
	id     json.RawMessage
	sse    bool
	buf    []byte
	over   bool // more than maxList: give up
	done   bool
}

func (t *listTap) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if !t.done && !t.over {
		if len(t.buf)+n > maxList {
			t.over, t.buf = true, nil
		} else {
			t.buf = append(t.buf, p[:n]...)
			if t.sse {
				t.scanEvents()
			}
		}
	}
	if err == io.EOF && !t.done && !t.over && !t.sse {
		t.done = true
		t.learn(t.buf)
		t.buf = nil
	}
	return n, err
}

// scanEvents reads each complete SSE event's data as a JSON-RPC message;
// the answer to id ends the watch.
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
		sc.Buffer(nil, maxList)
		for sc.Scan() {
			line := sc.Bytes()
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = append(data, bytes.TrimPrefix(v, []byte(" "))...)
				data = append(data, '\n')
			}
		}
		t.buf = t.buf[end+skip:]
		if len(data) > 0 && t.learn(data) {
			t.done, t.buf = true, nil
			return
		}
	}
}

func (t *listTap) Close() error { return t.rc.Close() }

// learn reads one JSON-RPC message and, when it is the answer to t.id,
// learns its tools list, if it has one. It reports whether it was the
// answer (a server's own request or notification on an SSE stream, or an
// answer to another id, is not).
func (t *listTap) learn(msg []byte) bool {
	f, err := fields(msg, "jsonrpc", "id", "method", "result", "error")
	if err != nil || f.has("method") || !sameID(f.get("id"), t.id) {
		return false
	}
	list, ok := readList(f.get("result"))
	if !ok {
		return true // an error, or a result without tools: the old list stands
	}
	safe := make(map[string]bool)
	names := make([]string, 0, len(list))
	for _, tool := range list {
		if len(tool.name) > MaxName || len(names) >= maxTools {
			continue
		}
		names = append(names, tool.name)
		if tool.safe {
			safe[tool.name] = true
		}
	}
	t.tools.safe.Store(&safe)
	if t.labels != nil {
		t.labels.learn(names)
	}
	return true
}

type listedTool struct {
	name string
	safe bool // readOnlyHint or idempotentHint
}

// readList reads result.tools with exact-case keys; a tool whose keys
// are ambiguous is not listed.
func readList(result json.RawMessage) ([]listedTool, bool) {
	if len(result) == 0 {
		return nil, false
	}
	rf, err := fields(result, "tools")
	if err != nil || !rf.has("tools") {
		return nil, false
	}
	var raw []json.RawMessage
	if json.Unmarshal(rf.get("tools"), &raw) != nil {
		return nil, false
	}
	var out []listedTool
	for _, r := range raw {
		tf, err := fields(r, "name", "annotations")
		var tool listedTool
		if err != nil || json.Unmarshal(tf.get("name"), &tool.name) != nil || tool.name == "" {
			continue
		}
		if a := tf.get("annotations"); len(a) > 0 && a[0] == '{' {
			af, err := fields(a, "readOnlyHint", "idempotentHint")
			tool.safe = err == nil && (isTrue(af.get("readOnlyHint")) || isTrue(af.get("idempotentHint")))
		}
		out = append(out, tool)
	}
	return out, true
}

func isTrue(v json.RawMessage) bool { return string(v) == "true" }

// validID: a request id that an answer can be matched to (a string or a
// number; null or nothing is no id).
func validID(id json.RawMessage) bool {
	_, ok := idValue(id)
	return ok
}

// sameID compares two JSON-RPC ids as values: "a" and "\u0061" are the
// same string, 1 and 1.0 the same number, "1" and 1 are not the same.
func sameID(a, b json.RawMessage) bool {
	x, ok1 := idValue(a)
	y, ok2 := idValue(b)
	return ok1 && ok2 && x == y
}

// idValue is an id's value: a string's text prefixed with s, a number's
// value prefixed with n.
func idValue(id json.RawMessage) (string, bool) {
	id = bytes.TrimSpace(id)
	if len(id) == 0 {
		return "", false
	}
	if id[0] == '"' {
		var s string
		if json.Unmarshal(id, &s) != nil {
			return "", false
		}
		return "s" + s, true
	}
	f, err := strconv.ParseFloat(string(id), 64)
	if err != nil {
		return "", false
	}
	return "n" + strconv.FormatFloat(f, 'g', -1, 64), true
}
