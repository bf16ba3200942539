package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// What the proxy does with a client's request body: bound it (max_body,
// body_idle_timeout), buffer what must be buffered (replay, JSON-RPC
// detection) and stream the rest.

// errBodyTooLarge is returned by the request body reader past server.max_body.
var errBodyTooLarge = errors.New("request body too large")

// errMalformedBody is a request body whose framing is invalid (a bad chunk).
var errMalformedBody = errors.New("malformed request body")

// errBodyStalled is a request body that sent no byte for body_idle_timeout.
var errBodyStalled = errors.New("request body stalled")

// readDeadliner is the server's ResponseWriter, HTTP/1 or HTTP/2: the read
// deadline of the connection (or stream) the body comes from.
type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

// clientBody is every client body as the proxy reads it, whoever reads it
// (JSON-RPC detection, replay buffering, the transport streaming it
// upstream): it enforces server.max_body on bodies of unknown length and
// server.body_idle_timeout on every read, and on failure records why in
// the request and cancels the request's context, so that an attempt that
// dies of it is never an upstream failure a breaker would count.
type clientBody struct {
	rc     io.ReadCloser
	left   int64 // bytes still allowed before max_body
	rq     *request
	cancel context.CancelCauseFunc // the request's

	conn     readDeadliner // nil: no deadline can be set
	deadline idleDeadline  // body_idle_timeout
	done     bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	b.arm()
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		b.fail(errBodyTooLarge)
		return n, errBodyTooLarge
	}
	switch {
	case err == io.EOF:
		b.disarm()
	case err != nil:
		b.fail(bodyError(err))
	}
	return n, err
}

// arm moves the read deadline forward before a read.
func (b *clientBody) arm() {
	if b.conn == nil || b.done {
		return
	}
	if dl, ok := b.deadline.next(); ok {
		_ = b.conn.SetReadDeadline(dl)
	}
}

// disarm clears the deadline once the body is whole: net/http then reads
// the connection in the background to notice a client that goes away,
// and a deadline left behind would cancel a long response.
func (b *clientBody) disarm() {
	if b.conn != nil && b.deadline.armed() && !b.done {
		_ = b.conn.SetReadDeadline(time.Time{})
	}
	b.done = true
}

func (b *clientBody) fail(cause error) {
	b.done = true
	b.rq.setBodyErr(cause)
	if errors.Is(cause, errBodyStalled) {
		b.rq.lw.closeConn = true // the framing of what follows is unknown
	}
	b.cancel(cause)
}

func (b *clientBody) Close() error { return b.rc.Close() }

// bodyError tells a client that went away from one that sent a malformed
// body and is still waiting for an answer (400), and from one whose body
// stalled (408). net/http cancels the request's context on either of the
// first two, so only the error itself can tell.
func bodyError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errBodyStalled
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return context.Canceled
	}
	return errMalformedBody
}

// prepareBody buffers what must be buffered, once: a body that attempts
// may replay (up to the route's replay limit) and a JSON POST whose
// errors may have to be JSON-RPC. A larger body streams through untouched.
func (rt *route) prepareBody(r *http.Request, rq *request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	learn := mayBeJSONRPC(r)
	rpc := rt.errors != "problem" && learn
	replay := rt.replayLimit(r.Method)
	if !rpc && replay <= 0 {
		return nil
	}
	limit := max(replay, rt.detectMax)
	if r.ContentLength > limit && !rpc {
		return nil // too large to replay: sent once, never buffered
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		cause := rq.bodyFailure()
		if cause == nil {
			cause = bodyError(err)
		}
		if rpc && errors.Is(cause, errBodyStalled) {
			rq.rpc = partialJSONRPC(buf)
		}
		return cause
	}
	if int64(len(buf)) > limit {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	if learn {
		rq.learnBody(buf, rpc)
	}
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.ContentLength = int64(len(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// mayBeJSONRPC: SPEC's JSON-RPC requests are POSTs with a JSON body.
func mayBeJSONRPC(r *http.Request) bool {
	return r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody && isJSON(r.Header.Get("Content-Type"))
}

// sniffJSONRPC reads the JSON POST of a request rejected before its body
// was read (no route, rate limited), up to limit, so that a JSON-RPC
// client is told in JSON-RPC. It returns what it learned (nil when the
// body is not a JSON-RPC request or too large to tell) and the body's own
// failure, if it broke or stalled.
func sniffJSONRPC(r *http.Request, rq *request, limit int64) (*jsonrpcRequest, rpcCall, error) {
	if !mayBeJSONRPC(r) || r.ContentLength > limit {
		return nil, rpcCall{}, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch cause := rq.bodyFailure(); {
	case err == nil && int64(len(buf)) > limit:
		return nil, rpcCall{}, nil
	case err == nil:
		rpc, call := parseJSONRPC(buf)
		return rpc, call, nil
	case errors.Is(cause, errBodyStalled):
		return partialJSONRPC(buf), rpcCall{}, cause
	case cause == nil:
		return nil, rpcCall{}, bodyError(err)
	default:
		return nil, rpcCall{}, cause
	}
}

// partialJSONRPC learns the id of a JSON-RPC request from the part of its
// body that arrived before the body failed: a stalled client is still
// answered in its own protocol when its "jsonrpc" and "id" came first.
func partialJSONRPC(buf []byte) *jsonrpcRequest {
	dec := json.NewDecoder(bytes.NewReader(buf))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var id json.RawMessage
	version := false
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
		switch key {
		case "jsonrpc":
			version = string(v) == `"2.0"`
		case "id":
			id = v
		}
	}
	if !version || id == nil {
		return nil
	}
	return &jsonrpcRequest{id: id}
}

type readCloser struct {
	io.Reader
	io.Closer
}
