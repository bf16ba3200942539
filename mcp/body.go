// Package mcp is what breakwater reads of MCP and JSON-RPC traffic: the
// method, id and tool of a request body, the tools/list answers that
// teach which tools may be called twice, and the bounded set of tool names
// that label metrics.
//
// Everything here is read as the MCP SDKs' servers read it (Python,
// TypeScript, Go): keys match with exact case. Go's encoding/json matches
// struct fields case-insensitively, so decoding into a struct would let
// {"name":"delete_post","NAME":"search"} mean search to breakwater and
// delete_post to the server; a body that repeats a key breakwater reads,
// in any letter case, is refused instead (ErrAmbiguous). The package knows
// nothing of routes or HTTP handlers; proxy uses it.
package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// ErrAmbiguous is a JSON-RPC body that names jsonrpc, id, method, params
// or params.name (or params.uri) twice, or in another letter case: servers
// and breakwater could read different calls from it.
var ErrAmbiguous = errors.New("a JSON-RPC key (jsonrpc, id, method, params, params.name or params.uri) is repeated or differs only in letter case")

// Message is one JSON-RPC 2.0 message of a request body.
type Message struct {
	// ID is the id as sent (raw JSON); nil when there is none (a
	// notification).
	ID json.RawMessage
	// Method is "" for a response the client sends back to a server's
	// request.
	Method string
	// Name is params.name, or for resources/read params.uri: what the
	// Mcp-Name header carries.
	Name string
}

// Tool is the tool a tools/call calls, "" for any other message.
func (m Message) Tool() string {
	if m.Method == "tools/call" {
		return m.Name
	}
	return ""
}

// Body is what a JSON body says as JSON-RPC 2.0.
type Body struct {
	// Messages holds the one message of a single request, or every element
	// of a batch; nil when the body is not JSON-RPC 2.0.
	Messages []Message
	// Batch: the body is a JSON array (MCP removed batching in 2025-06-18).
	Batch bool
	// ErrorID is the id an error answer carries: the request's own, null
	// for a batch or a request whose id could not be read; nil when the
	// body is no JSON-RPC request (a notification, a response, not
	// JSON-RPC), which is answered in the problem form.
	ErrorID json.RawMessage
}

// Single is the message of a body that is one message (zero otherwise).
func (b Body) Single() Message {
	if b.Batch || len(b.Messages) != 1 {
		return Message{}
	}
	return b.Messages[0]
}

var null = json.RawMessage("null")

// HeaderError is an Mcp-Method or Mcp-Name header that disagrees with the
// body it came with.
type HeaderError struct {
	Header string // Mcp-Method or Mcp-Name
}

func (e *HeaderError) Error() string {
	what := "method"
	if e.Header == "Mcp-Name" {
		what = "params.name (params.uri for resources/read)"
	}
	return "The " + e.Header + " header disagrees with the JSON-RPC body's " + what + "."
}

// namedMethods are the methods whose params name what Mcp-Name carries.
var namedMethods = map[string]bool{"tools/call": true, "prompts/get": true, "resources/read": true}

// CheckHeaders holds the Mcp-Method and Mcp-Name headers (sent by MCP
// clients since protocol 2026-07-28) to what the body says: every value
// sent must equal it, for every message of the body. Headers that are
// absent, or sent with a body that is no JSON-RPC, are no error: they
// decide nothing either way.
func (b Body) CheckHeaders(h http.Header) error {
	methods, names := h.Values("Mcp-Method"), h.Values("Mcp-Name")
	for _, m := range b.Messages {
		for _, v := range methods {
			if v != m.Method {
				return &HeaderError{Header: "Mcp-Method"}
			}
		}
		if !namedMethods[m.Method] {
			continue
		}
		for _, v := range names {
			if v != m.Name {
				return &HeaderError{Header: "Mcp-Name"}
			}
		}
	}
	return nil
}

// Read reads a request body. A body that is not JSON-RPC 2.0 (not JSON,
// plain JSON, an empty batch) is a zero Body and no error. A JSON-RPC body
// with ambiguous keys returns ErrAmbiguous, with ErrorID set when the id
// could still be read.
func Read(body []byte) (Body, error) {
	body = trimJSON(body)
	if len(body) == 0 {
		return Body{}, nil
	}
	if body[0] != '[' {
		m, rpc, err := readMessage(body)
		if !rpc {
			return Body{}, nil
		}
		b := Body{}
		if m.ID != nil && (m.Method != "" || err != nil) {
			b.ErrorID = m.ID
		}
		if err != nil {
			return b, err
		}
		b.Messages = []Message{m}
		return b, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(body, &elems) != nil || len(elems) == 0 {
		return Body{}, nil
	}
	b := Body{Batch: true, ErrorID: null, Messages: make([]Message, 0, len(elems))}
	anyRPC := false
	for _, e := range elems {
		m, rpc, err := readMessage(e)
		if err != nil {
			return Body{Batch: true, ErrorID: null}, err
		}
		anyRPC = anyRPC || rpc
		b.Messages = append(b.Messages, m)
	}
	if !anyRPC {
		return Body{}, nil
	}
	return b, nil
}

// Unreadable reports whether body is meant as JSON (it starts with an
// object or an array) but is no one strict JSON value: data after it, NaN,
// a syntax error, nesting too deep. Lenient servers execute some of these
// (Python's json.loads takes NaN, a Go handler's json.Decoder stops after
// the first value) while Read finds no JSON-RPC in them.
func Unreadable(body []byte) bool {
	body = trimJSON(body)
	return len(body) > 0 && (body[0] == '{' || body[0] == '[') && !json.Valid(body)
}

// trimJSON drops a leading UTF-8 byte order mark, which Python's
// json.loads and Express's body parser skip too, and white space.
func trimJSON(body []byte) []byte {
	return bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
}

// readMessage reads one JSON-RPC message. rpc says the object is meant as
// JSON-RPC: it has "jsonrpc":"2.0", or a key that is "jsonrpc" in another
// case (then it is ambiguous). A plain JSON object that merely has an "id"
// and an "ID" is no JSON-RPC and no error.
func readMessage(raw []byte) (m Message, rpc bool, err error) {
	f, err := fields(raw, "jsonrpc", "id", "method", "params")
	if err != nil && !errors.Is(err, ErrAmbiguous) {
		return Message{}, false, nil
	}
	if f.variant["jsonrpc"] || f.count["jsonrpc"] > 1 {
		return Message{ID: f.unique("id")}, true, ErrAmbiguous
	}
	var version string
	if json.Unmarshal(f.get("jsonrpc"), &version) != nil || version != "2.0" {
		return Message{}, false, nil
	}
	m.ID = f.unique("id")
	if err != nil {
		if m.ID == nil && f.has("id") {
			m.ID = null // an id, but which: answered with null, as JSON-RPC says
		}
		return m, true, err
	}
	if v := f.get("method"); v != nil && json.Unmarshal(v, &m.Method) != nil {
		return Message{}, false, nil // not a string: not a request anyone serves
	}
	if p := f.get("params"); len(p) > 0 && p[0] == '{' {
		pf, err := fields(p, "name", "uri")
		if err != nil {
			return m, true, ErrAmbiguous
		}
		key := "name"
		if m.Method == "resources/read" {
			key = "uri"
		}
		_ = json.Unmarshal(pf.get(key), &m.Name) // not a string: no name
	}
	return m, true, nil
}

// found is what fields read of one object.
type found struct {
	vals    map[string]json.RawMessage
	count   map[string]int
	variant map[string]bool // a key equal to a wanted one in another letter case
}

func (f found) get(k string) json.RawMessage { return f.vals[k] }
func (f found) has(k string) bool            { return f.count[k] > 0 || f.variant[k] }

// unique is k's value when it is neither repeated nor has a variant.
func (f found) unique(k string) json.RawMessage {
	if f.count[k] == 1 && !f.variant[k] {
		return f.vals[k]
	}
	return nil
}

// fields reads the JSON object raw (one value, nothing after it) and
// returns the values of the wanted keys, matched with exact case. Keys
// are unescaped before they are compared ("na\u006de" is "name"). A
// wanted key seen twice, or a key that equals a wanted one under Unicode
// case folding (as Go's encoding/json folds: "NAME", "Name", "nAme") is
// reported with ErrAmbiguous; the other errors mean raw is no object.
func fields(raw []byte, want ...string) (found, error) {
	f := found{vals: map[string]json.RawMessage{}, count: map[string]int{}, variant: map[string]bool{}}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return f, errNotObject
	}
	ambiguous := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return f, errNotObject
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return f, errNotObject
		}
		for _, w := range want {
			switch {
			case key == w:
				f.count[w]++
				if f.count[w] == 1 {
					f.vals[w] = v
				} else {
					ambiguous = true
				}
			case strings.EqualFold(key, w):
				f.variant[w], ambiguous = true, true
			}
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return f, errNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return f, errNotObject // trailing data: not one JSON value
	}
	if ambiguous {
		return f, ErrAmbiguous
	}
	return f, nil
}

var errNotObject = errors.New("not a JSON object")

// PartialID is the id of a JSON-RPC request read from the part of its
// body that arrived before the body failed: a stalled client is still
// answered in its own protocol when its "jsonrpc" and "id" came first.
// nil when they did not, or when either came twice.
func PartialID(buf []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(buf))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var id json.RawMessage
	ids, versions := 0, 0
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		switch {
		case key == "jsonrpc" && string(v) == `"2.0"`:
			versions++
		case strings.EqualFold(key, "jsonrpc"):
			return nil
		case key == "id":
			id = v
			ids++
		case strings.EqualFold(key, "id"):
			return nil
		}
	}
	if versions != 1 || ids != 1 {
		return nil
	}
	return id
}
