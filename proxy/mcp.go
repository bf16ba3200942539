package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/breakwater-proxy/breakwater/mcp"
	"github.com/breakwater-proxy/breakwater/policy"
)

// What the proxy makes of a JSON-RPC request (package mcp reads it): the
// call that routes, limits, retries and labels it comes from the body,
// read once into the buffer the replay uses (body.go); Mcp-Method and
// Mcp-Name headers are held to it and never decide on their own (SPEC
// Part 3, "The JSON-RPC body decides").

// rpcCall is a JSON-RPC request's method and, for tools/call, its tool:
// what the access log, the trace and the tool label say. Zero for a batch
// or a body that is no JSON-RPC.
type rpcCall struct {
	method, tool string
}

// errRefusedRPC is a JSON-RPC body breakwater will not pass on: keys that
// are ambiguous, Mcp-* headers that disagree with it, a batch where
// batches are refused. 400 bad_request; rq.detail says which.
var errRefusedRPC = errors.New("refused JSON-RPC body")

// readCall reads a JSON POST's body, up to limit, and what it says as
// JSON-RPC, once: the answer is kept for every later caller. A body over
// limit teaches nothing (rq.callRead stays false, and a later caller with
// a larger limit reads on). It returns the body's own failure (too large
// for max_body, broken, stalled) or errRefusedRPC.
func (rq *request) readCall(r *http.Request, limit int64, batches bool) error {
	if rq.callRead || !mayBeJSONRPC(r) {
		return rq.callErr
	}
	return rq.readBodyCall(r, limit, batches, false)
}

// readRouteCall is readCall for a route that matches on the call, which
// must not take a call it cannot read for no call: a lenient server still
// executes a tools/call sent as text/plain, in a PUT, gzipped, or as JSON
// only it parses. So any body is read, whatever the method and
// Content-Type, and one that is encoded (Content-Encoding) or meant as
// JSON but not strict JSON (mcp.Unreadable) is refused.
func (rq *request) readRouteCall(r *http.Request, limit int64, batches bool) error {
	if rq.callRead || r.Body == nil || r.Body == http.NoBody {
		return rq.callErr
	}
	for _, v := range r.Header.Values("Content-Encoding") {
		if !strings.EqualFold(strings.TrimSpace(v), "identity") {
			rq.callRead = true
			rq.refuse(detailEncoded)
			return rq.callErr
		}
	}
	return rq.readBodyCall(r, limit, batches, true)
}

// readBodyCall reads the body, up to limit, and what it says as JSON-RPC;
// strict: a body meant as JSON that is no strict JSON is refused.
func (rq *request) readBodyCall(r *http.Request, limit int64, batches, strict bool) error {
	if err := rq.readAhead(r, limit); err != nil {
		if errors.Is(err, errBodyStalled) {
			// Answered in JSON-RPC if its id came before the stall.
			if id := mcp.PartialID(rq.ahead.buf); id != nil {
				rq.rpc = &jsonrpcRequest{id: id}
			}
		}
		return err
	}
	if !rq.ahead.whole {
		return nil // too large to tell
	}
	rq.callRead = true
	body, err := mcp.Read(rq.ahead.buf)
	if body.ErrorID != nil {
		rq.rpc = &jsonrpcRequest{id: body.ErrorID}
	}
	rq.jsonrpc = body
	if m := body.Single(); m.Method != "" {
		rq.call = rpcCall{method: m.Method, tool: m.Tool()}
	}
	var he *mcp.HeaderError
	switch {
	case err != nil:
		rq.refuse(detailAmbiguous)
	case strict && body.Messages == nil && mcp.Unreadable(rq.ahead.buf):
		rq.refuse(detailUnreadable)
	case body.Batch && !batches:
		rq.refuse(detailBatch)
	case errors.As(body.CheckHeaders(r.Header), &he):
		rq.refuse(he.Error())
	}
	return rq.callErr
}

// Details of a refused JSON-RPC body, read by clients and the language
// models behind them.
const (
	detailAmbiguous  = "The JSON-RPC body names jsonrpc, id, method, params or params.name twice, or in another letter case; send each once, spelled in lower case."
	detailUnreadable = "The body is not one strict JSON value (data after it, NaN, a syntax error), so breakwater cannot read which JSON-RPC method or tool it calls, which decides its route."
	detailEncoded    = "The body has a Content-Encoding, so breakwater cannot read which JSON-RPC method or tool it calls, which decides its route; send it unencoded."
	detailBatch      = "The body is a JSON-RPC batch, which is not accepted here (MCP removed batches in its 2025-06-18 revision); send each request on its own."
)

// refuse records why the body is refused.
func (rq *request) refuse(detail string) {
	rq.callErr, rq.detail = errRefusedRPC, detail
}

// weight is how many requests this one counts as against rate limits:
// one per element of a batch.
func (rq *request) weight() int {
	if rq.jsonrpc.Batch {
		return len(rq.jsonrpc.Messages)
	}
	return 1
}

// decideRepeat is the retry decision a JSON-RPC body makes, whatever the
// method: a batch is never sent twice; under retry.tools: annotated, a
// tools/call is sent twice only when its tool's annotations say it may.
func (rt *route) decideRepeat(r *http.Request, rq *request) {
	switch {
	case rq.jsonrpc.Batch:
		rq.trace.Repeat = policy.RepeatNever
	case rt.hints != nil && rq.call.method == "tools/call" && r.Method == http.MethodPost:
		rq.trace.Repeat = policy.RepeatNever
		if rt.hints.Repeatable(rq.call.tool) {
			rq.trace.Repeat = policy.RepeatSafe
		}
	}
}

// watchToolsList reads the answer to a tools/list this route read from
// the body, for its upstream's annotations and the tool labels. Only a
// route that reads the call (match on jsonrpc_method or tool, or retry
// tools: annotated) learns.
func (s *Server) watchToolsList(resp *http.Response, rq *request) {
	m := rq.jsonrpc.Single()
	if t := rq.route.tools; t != nil && m.Method == "tools/list" && m.ID != nil {
		t.Watch(resp, m.ID, &s.tools)
	}
}

// clip bounds a client's text in the access log.
func clip(s string) string {
	if len(s) > mcp.MaxName {
		return s[:mcp.MaxName]
	}
	return s
}
