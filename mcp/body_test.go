package mcp

import (
	"errors"
	"net/http"
	"testing"
)

func TestRead(t *testing.T) {
	type msg struct{ method, name string }
	cases := []struct {
		name    string
		body    string
		errorID string // "" = none (problem form)
		batch   bool
		msgs    []msg // nil = not JSON-RPC
		err     error
	}{
		{name: "call, numeric id", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`, errorID: "1", msgs: []msg{{"tools/call", "a"}}},
		{name: "call, string id", body: `{"jsonrpc":"2.0","id":"a-1","method":"tools/list","params":{}}`, errorID: `"a-1"`, msgs: []msg{{"tools/list", ""}}},
		{name: "call, null id", body: `{"jsonrpc":"2.0","id":null,"method":"x"}`, errorID: "null", msgs: []msg{{"x", ""}}},
		{name: "leading whitespace", body: " \n\t{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x\"}\n", errorID: "2", msgs: []msg{{"x", ""}}},
		{name: "byte order mark", body: "\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x\"}", errorID: "2", msgs: []msg{{"x", ""}}},
		{name: "escaped key", body: `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"na\u006de":"b"}}`, errorID: "2", msgs: []msg{{"tools/call", "b"}}},
		{name: "resources/read names its uri", body: `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a","name":"x"}}`, errorID: "2", msgs: []msg{{"resources/read", "file:///a"}}},
		{name: "positional params", body: `{"jsonrpc":"2.0","id":2,"method":"x","params":[1,2]}`, errorID: "2", msgs: []msg{{"x", ""}}},
		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]`, errorID: "null", batch: true, msgs: []msg{{"a", ""}, {"b", ""}}},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, msgs: []msg{{"notifications/initialized", ""}}},
		{name: "response, no method", body: `{"jsonrpc":"2.0","id":1,"result":{}}`, msgs: []msg{{"", ""}}},
		{name: "version 1", body: `{"jsonrpc":"1.0","id":1,"method":"x"}`},
		{name: "no version", body: `{"id":1,"method":"x"}`},
		{name: "empty batch", body: `[]`},
		{name: "batch of something else", body: `[{"id":1}]`},
		{name: "plain JSON", body: `{"name":"x"}`},
		{name: "plain JSON with id and ID", body: `{"id":1,"ID":2}`},
		{name: "method not a string", body: `{"jsonrpc":"2.0","id":1,"method":7}`},
		{name: "truncated", body: `{"jsonrpc":"2.0","id":1,"meth`},
		{name: "trailing garbage", body: `{"jsonrpc":"2.0","id":1,"method":"x"} junk`},
		{name: "a string", body: `"jsonrpc"`},
		{name: "empty", body: ``},
		{name: "not JSON", body: `jsonrpc=2.0&id=1`},

		// What a server reads with exact-case keys and what Go's
		// case-insensitive decoder reads differ: refused.
		{name: "name in upper case too", body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_post","NAME":"search"}}`, errorID: "3", err: ErrAmbiguous},
		{name: "name twice", body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","name":"delete_post"}}`, errorID: "3", err: ErrAmbiguous},
		{name: "Name only", body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"Name":"delete_post"}}`, errorID: "3", err: ErrAmbiguous},
		{name: "jsonrpc with a long s (Go folds it to s)", body: `{"j\u017fonrpc":"2.0","id":3,"method":"tools/call"}`, errorID: "3", err: ErrAmbiguous},
		{name: "Method only", body: `{"jsonrpc":"2.0","id":5,"Method":"tools/call"}`, errorID: "5", err: ErrAmbiguous},
		{name: "method twice", body: `{"jsonrpc":"2.0","id":5,"method":"tools/list","method":"tools/call"}`, errorID: "5", err: ErrAmbiguous},
		{name: "params twice", body: `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a"},"PARAMS":{"name":"b"}}`, errorID: "5", err: ErrAmbiguous},
		{name: "id twice", body: `{"jsonrpc":"2.0","id":5,"id":6,"method":"x"}`, errorID: "null", err: ErrAmbiguous},
		{name: "ID", body: `{"jsonrpc":"2.0","ID":5,"method":"x"}`, errorID: "null", err: ErrAmbiguous},
		{name: "JSONRPC", body: `{"JSONRPC":"2.0","id":5,"method":"x"}`, errorID: "5", err: ErrAmbiguous},
		{name: "jsonrpc twice, 2.0 last", body: `{"jsonrpc":"1.0","jsonrpc":"2.0","id":5,"method":"x"}`, errorID: "5", err: ErrAmbiguous},
		{name: "in a batch element", body: `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}]`, errorID: "null", batch: true, err: ErrAmbiguous},
	}
	for _, tc := range cases {
		b, err := Read([]byte(tc.body))
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
		if string(b.ErrorID) != tc.errorID || b.Batch != tc.batch {
			t.Errorf("%s: error id %s, batch %v; want %q, %v", tc.name, b.ErrorID, b.Batch, tc.errorID, tc.batch)
		}
		if tc.err != nil {
			continue
		}
		if len(b.Messages) != len(tc.msgs) {
			t.Errorf("%s: %d messages %+v, want %d", tc.name, len(b.Messages), b.Messages, len(tc.msgs))
			continue
		}
		for i, m := range tc.msgs {
			if got := b.Messages[i]; got.Method != m.method || got.Name != m.name {
				t.Errorf("%s: message %d is %+v, want %+v", tc.name, i, got, m)
			}
		}
	}
}

func TestCheckHeaders(t *testing.T) {
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_post"}}`
	cases := []struct {
		name, body string
		header     http.Header
		want       string // the header named, "" = agrees
	}{
		{"no headers", call, nil, ""},
		{"agreeing", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"delete_post"}}, ""},
		{"another tool", call, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"search"}}, "Mcp-Name"},
		{"another method", call, http.Header{"Mcp-Method": {"tools/list"}}, "Mcp-Method"},
		{"a second, other value", call, http.Header{"Mcp-Method": {"tools/call", "tools/list"}}, "Mcp-Method"},
		{"a name for tools/list is ignored", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, http.Header{"Mcp-Name": {"x"}}, ""},
		{"resources/read names its uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b"}}`, http.Header{"Mcp-Name": {"a://b"}}, ""},
		{"a response does not call tools/call", `{"jsonrpc":"2.0","id":1,"result":{}}`, http.Header{"Mcp-Method": {"tools/call"}}, "Mcp-Method"},
		{"every element of a batch", `[` + call + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search"}}]`, http.Header{"Mcp-Name": {"search"}}, "Mcp-Name"},
		{"no JSON-RPC body: nothing to hold them to", `{"a":1}`, http.Header{"Mcp-Method": {"tools/call"}}, ""},
	}
	for _, tc := range cases {
		b, err := Read([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = b.CheckHeaders(tc.header)
		var he *HeaderError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want agreement", tc.name, err)
		case tc.want != "" && (!errors.As(err, &he) || he.Header != tc.want):
			t.Errorf("%s: %v, want a disagreement naming %s", tc.name, err, tc.want)
		}
	}
}

func TestPartialID(t *testing.T) {
	for body, want := range map[string]string{
		`{"jsonrpc":"2.0","id":9,"method":"tools/call",`: "9",
		`{"id":"a","jsonrpc":"2.0","par`:                 `"a"`,
		`{"jsonrpc":"2.0","method":"x","par`:             "",
		`{"jsonrpc":"2.0","id":9,"ID":8,`:                "",
		`{"jsonrpc":"2.0","id":9,"id":8,`:                "",
		`{"id":9,"met`:                                   "",
		`[{"jsonrpc":"2.0","id":9`:                       "",
	} {
		if got := PartialID([]byte(body)); string(got) != want {
			t.Errorf("%s: id %s, want %q", body, got, want)
		}
	}
}

// TestUnreadable: what a lenient server may still read as a call, though
// it is no strict JSON, against what is plainly no JSON at all.
func TestUnreadable(t *testing.T) {
	for body, want := range map[string]bool{
		`{"jsonrpc":"2.0","id":1,"method":"x"} junk`:               true,
		`{"jsonrpc":"2.0","id":1,"method":"x"}{"id":2}`:            true,
		`{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":NaN}}`: true,
		"\xef\xbb\xbf[{\"id\":1},]":                                true,
		`{"jsonrpc":"2.0","id":1,"method":"x"}` + "\n":             false,
		"\xef\xbb\xbf{}":          false,
		`hello {"jsonrpc":"2.0"}`: false,
		``:                        false,
	} {
		if got := Unreadable([]byte(body)); got != want {
			t.Errorf("Unreadable(%q) = %v, want %v", body, got, want)
		}
	}
}
