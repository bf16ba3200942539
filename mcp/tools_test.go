package mcp

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// watch passes body through a tap for the tools/list request id, as
// Content-Type ctype, and reports whether the client got it unchanged.
func watch(t *testing.T, tools *Tools, labels *Labels, id, ctype, body string) {
	t.Helper()
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {ctype}}, Body: io.NopCloser(strings.NewReader(body))}
	tools.Watch(resp, json.RawMessage(id), labels)
	got, _ := io.ReadAll(resp.Body)
	if string(got) != body {
		t.Errorf("the body changed in passing")
	}
}

// TestToolsListTap reads the list from the JSON and SSE forms, and only
// from the answer to the request's own id: a server's request on the
// stream, another id, a result without tools or ambiguous keys teach
// nothing.
func TestToolsListTap(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","annotations":{"readOnlyHint":true}},{"name":"b"},{"name":"c","annotations":{"idempotentHint":true,"readOnlyHint":false}}]}}`
	for name, tc := range map[string]struct{ ctype, body string }{
		"json": {"application/json", list},
		"sse":  {"text/event-stream", "event: message\nid: 1\ndata: " + list + "\n\n"},
		"crlf": {"text/event-stream; charset=utf-8", ": ping\r\n\r\ndata: " + list + "\r\n\r\n"},
		"sse, a server request first": {"text/event-stream",
			`data: {"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","result":{"tools":[{"name":"b","annotations":{"readOnlyHint":true}}]}}` + "\n\ndata: " + list + "\n\n"},
	} {
		tools := &Tools{}
		watch(t, tools, nil, "1", tc.ctype, tc.body)
		if !tools.Repeatable("a") || tools.Repeatable("b") || !tools.Repeatable("c") {
			t.Errorf("%s: a=%v b=%v c=%v, want true false true", name, tools.Repeatable("a"), tools.Repeatable("b"), tools.Repeatable("c"))
		}
		watch(t, tools, nil, "2", "application/json", `{"jsonrpc":"2.0","id":2,"result":{}}`)
		if !tools.Repeatable("a") {
			t.Errorf("%s: a result without tools replaced the list", name)
		}
		watch(t, tools, nil, "3", "application/json", `{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}`)
		if tools.Repeatable("a") {
			t.Errorf("%s: a new, empty list did not replace the old", name)
		}
	}

	fake := `"result":{"tools":[{"name":"delete_post","annotations":{"readOnlyHint":true}}]}`
	for name, tc := range map[string]struct{ id, body string }{
		"another id":               {"1", `{"jsonrpc":"2.0","id":2,` + fake + `}`},
		"the id as a string":       {"1", `{"jsonrpc":"2.0","id":"1",` + fake + `}`},
		"a request, not an answer": {"1", `{"jsonrpc":"2.0","id":1,"method":"tools/list",` + fake + `}`},
		"id twice":                 {"1", `{"jsonrpc":"2.0","id":1,"id":2,` + fake + `}`},
		"RESULT":                   {"1", `{"jsonrpc":"2.0","id":1,"RESULT":{"tools":[{"name":"delete_post","annotations":{"readOnlyHint":true}}]}}`},
		"readonlyhint":             {"1", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_post","annotations":{"readonlyhint":true}}]}}`},
		"no id asked":              {"null", `{"jsonrpc":"2.0","id":null,` + fake + `}`},
	} {
		tools := &Tools{}
		watch(t, tools, nil, tc.id, "application/json", tc.body)
		if tools.Repeatable("delete_post") {
			t.Errorf("%s: learned delete_post as safe", name)
		}
	}

	// The same id in another spelling is the same id.
	for id, answer := range map[string]string{`"a"`: `"\u0061"`, "1": "1.0", "10": "1e1"} {
		tools := &Tools{}
		watch(t, tools, nil, id, "application/json", `{"jsonrpc":"2.0","id":`+answer+`,`+fake+`}`)
		if !tools.Repeatable("delete_post") {
			t.Errorf("id %s answered as %s: not learned", id, answer)
		}
	}
}

// TestLabels: the config's tools, then the first max learned ones, then
// other; the label set only grows.
func TestLabels(t *testing.T) {
	var l Labels
	l.Configure([]string{"search_posts"}, 2)
	if got := l.Label("get_post"); got != "other" {
		t.Errorf("an unlearned tool is labelled %q, want other", got)
	}
	tools := &Tools{}
	watch(t, tools, &l, "1", "application/json", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_posts"},{"name":"get_post"},{"name":"`+strings.Repeat("x", 200)+`"},{"name":"list_posts"},{"name":"third"}]}}`)
	for tool, want := range map[string]string{"": "", "search_posts": "search_posts", "get_post": "get_post", "list_posts": "list_posts", "third": "other", "junk": "other"} {
		if got := l.Label(tool); got != want {
			t.Errorf("label of %q = %q, want %q", tool, got, want)
		}
	}
	watch(t, tools, &l, "2", "application/json", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"third"}]}}`)
	l.Configure(nil, 2) // a reload
	if l.Label("get_post") != "get_post" || l.Label("third") != "other" {
		t.Errorf("after a new list and a reload: get_post %q, third %q; want get_post kept, third other", l.Label("get_post"), l.Label("third"))
	}
}
