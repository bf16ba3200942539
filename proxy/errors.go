package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/internal/ending"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Kind is an error kind of SPEC.md's table: the value of X-Breakwater-Error.
type Kind string

// The kinds. kindClientClosed is never sent (the client is gone); it
// labels the access log's 499.
const (
	KindNoRoute             Kind = "no_route"
	KindBodyTooLarge        Kind = "body_too_large"
	KindBadRequest          Kind = "bad_request" // a malformed body, or a JSON-RPC body breakwater refuses (SPEC Part 3)
	KindRequestTimeout      Kind = "request_timeout"
	KindMethodNotAllowed    Kind = "method_not_allowed" // not in SPEC's table: CONNECT or TRACE no route lists
	KindHeadersTooLarge     Kind = "headers_too_large"  // not in SPEC's table: over server.max_header_bytes
	KindRateLimited         Kind = "rate_limited"
	KindUnauthorized        Kind = "unauthorized"
	KindQuotaExhausted      Kind = "quota_exhausted"
	KindCircuitOpen         Kind = "circuit_open"
	KindBulkheadFull        Kind = "bulkhead_full"
	KindTimeout             Kind = "timeout"
	KindUpstreamUnreachable Kind = "upstream_unreachable"
	// KindUpstreamAuthFailed: no token for the upstream could be had. It is
	// not an upstream failure: the request never reached the upstream, so
	// no breaker counts it (the token endpoint, not the API, is down or
	// refusing us, and opening the API's breaker would only delay recovery
	// once a token comes), and no quota is spent.
	KindUpstreamAuthFailed Kind = "upstream_auth_failed"
	kindClientClosed       Kind = "client_closed"
)

// StatusClientClosed is nginx's 499, logged when the client left first.
const StatusClientClosed = 499

// statuses is each kind's HTTP status.
var statuses = map[Kind]int{
	KindNoRoute:             http.StatusNotFound,
	KindBodyTooLarge:        http.StatusRequestEntityTooLarge,
	KindBadRequest:          http.StatusBadRequest,
	KindRequestTimeout:      http.StatusRequestTimeout,
	KindMethodNotAllowed:    http.StatusMethodNotAllowed,
	KindHeadersTooLarge:     http.StatusRequestHeaderFieldsTooLarge,
	KindRateLimited:         http.StatusTooManyRequests,
	KindUnauthorized:        http.StatusUnauthorized,
	KindQuotaExhausted:      http.StatusServiceUnavailable,
	KindCircuitOpen:         http.StatusServiceUnavailable,
	KindBulkheadFull:        http.StatusServiceUnavailable,
	KindTimeout:             http.StatusGatewayTimeout,
	KindUpstreamUnreachable: http.StatusBadGateway,
	KindUpstreamAuthFailed:  http.StatusBadGateway,
	kindClientClosed:        StatusClientClosed,
}

// kindOf maps an error to its kind; failureKind, not this, decides a
// failed request.
func kindOf(err error) Kind {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return KindBodyTooLarge
	case errors.Is(err, errMalformedBody), errors.Is(err, errRefusedRPC):
		return KindBadRequest
	case errors.Is(err, errBodyStalled):
		return KindRequestTimeout
	case errors.Is(err, errRateLimited):
		return KindRateLimited
	case errors.Is(err, policy.ErrCircuitOpen):
		return KindCircuitOpen
	case errors.Is(err, policy.ErrBulkheadFull):
		return KindBulkheadFull
	case errors.Is(err, policy.ErrQuotaExhausted):
		return KindQuotaExhausted
	case errors.Is(err, policy.ErrTimeout), errors.Is(err, policy.ErrAttemptTimeout):
		return KindTimeout
	case errors.Is(err, errNoRoute):
		return KindNoRoute
	case errors.Is(err, auth.ErrUnavailable):
		return KindUpstreamAuthFailed
	case errors.Is(err, context.Canceled):
		return kindClientClosed
	}
	return KindUpstreamUnreachable
}

// failureKind is the one decision, made once per failed request, of what
// its failure was:
//   - a client body that broke (too large, malformed, stalled) is the
//     client's failure, whatever the attempt made of it;
//   - a cancellation is the client leaving, or the route's timeout, as
//     ending.Of decides against the client's own context: failsafe's
//     executor reports the route timeout as a bare context.Canceled
//     (writing nothing would hand the client an empty 200);
//   - otherwise kindOf's mapping.
func failureKind(err, bodyErr error, client context.Context) Kind {
	if bodyErr != nil && !errors.Is(bodyErr, context.Canceled) {
		return kindOf(bodyErr)
	}
	k := kindOf(err)
	if k == kindClientClosed && ending.Of(err, client) == ending.Timeout {
		return KindTimeout
	}
	return k
}

// failureDetail is a failed request's own detail, "" for its kind's:
// which upstream's token endpoint failed and how, or why a bulkhead turned
// the request away (policy gives the reason, the words are ours).
func failureDetail(kind Kind, err error) string {
	if kind == KindUpstreamAuthFailed {
		return authDetail(err)
	}
	return bulkheadDetails[policy.ReasonOf(err)]
}

// bulkheadDetails word a bulkhead's reasons (policy.Reason) for the client.
var bulkheadDetails = map[policy.Reason]string{
	policy.QueueFull:  "Too many requests are in progress or waiting for this route or upstream: the queue is full, so this one was turned away at once.",
	policy.WaitRanOut: "Too many requests are in progress for this route or upstream: this one waited its maximum time in the queue without getting a slot.",
	policy.Shed:       "Too many requests are waiting for this route or upstream: this one gave its place in the queue to a higher-priority request.",
}

// abortKind decides a request whose response was cut after it started
// (ReverseProxy panics with http.ErrAbortHandler): the client left, or
// could not keep up; "" when the upstream's stream broke.
func abortKind(clientGone, clientStalled bool) Kind {
	switch {
	case clientStalled: // net/http cancels the request on the failed write too
		return kindClientStalled
	case clientGone:
		return kindClientClosed
	}
	return ""
}

// kindClientStalled is logged, never sent: the client stopped reading its
// response for stream_idle_timeout.
const kindClientStalled Kind = "client_stalled"

var (
	errNoRoute     = errors.New("no route matches")
	errRateLimited = errors.New("rate limited")
)

var titles = map[Kind]string{
	KindNoRoute:             "No route matches this request",
	KindBodyTooLarge:        "Request body too large",
	KindBadRequest:          "Malformed request",
	KindRequestTimeout:      "Request body timed out",
	KindMethodNotAllowed:    "Method not allowed",
	KindHeadersTooLarge:     "Request headers too large",
	KindRateLimited:         "Too many requests",
	KindUnauthorized:        "Client key missing or not valid",
	KindQuotaExhausted:      "Upstream quota exhausted",
	KindCircuitOpen:         "Upstream circuit open",
	KindBulkheadFull:        "Too many concurrent requests",
	KindTimeout:             "Upstream timed out",
	KindUpstreamUnreachable: "Upstream unreachable",
	KindUpstreamAuthFailed:  "Upstream credentials unavailable",
}

// details say plainly what happened; a JSON-RPC message is often read by a
// language model deciding what to do next.
var details = map[Kind]string{
	KindNoRoute:             "breakwater has no route for this method and path.",
	KindBodyTooLarge:        "The request body is larger than this proxy accepts.",
	KindBadRequest:          "The request body is not valid HTTP (for example a malformed chunk).",
	KindRequestTimeout:      "The request body stopped arriving, so breakwater gave up waiting for it.",
	KindMethodNotAllowed:    "breakwater does not forward this method unless a route lists it.",
	KindHeadersTooLarge:     "The request headers are larger than this proxy accepts.",
	KindRateLimited:         "This client sent too many requests to this route.",
	KindUnauthorized:        "This route needs a valid client key, and the request had none, or one that is unknown or disabled. Trying again with the same key will not help.",
	KindQuotaExhausted:      "The upstream API's request quota is used up for now.",
	KindCircuitOpen:         "The upstream API is failing, so breakwater has stopped calling it for a while.",
	KindBulkheadFull:        "Too many requests to this route are in progress.",
	KindTimeout:             "The upstream API did not answer in time.",
	KindUpstreamUnreachable: "The upstream API could not be reached.",
	KindUpstreamAuthFailed:  "breakwater could not obtain an access token for the upstream API, so the request was not sent.",
}

// jsonrpcCodes lie outside JSON-RPC's reserved range, as MCP asks of intermediaries.
var jsonrpcCodes = map[Kind]int{
	KindRateLimited:         -31429,
	KindUnauthorized:        -31401,
	KindQuotaExhausted:      -31429,
	KindCircuitOpen:         -31503,
	KindBulkheadFull:        -31503,
	KindUpstreamUnreachable: -31503,
	KindUpstreamAuthFailed:  -31503,
	KindTimeout:             -31504,
	KindNoRoute:             -31404,
	KindBodyTooLarge:        -31413,
	KindBadRequest:          -32600, // JSON-RPC's own Invalid Request (SPEC Part 3)
	KindRequestTimeout:      -31504,
	KindMethodNotAllowed:    -31405,
	KindHeadersTooLarge:     -31431,
}

// errorReply is everything an error response needs.
type errorReply struct {
	kind       Kind
	status     int
	retryAfter time.Duration
	route      string
	requestID  string
	mode       errorMode       // the route's errors setting; auto without a route
	detail     string          // "" = the kind's own detail
	rpc        *jsonrpcRequest // nil when the request was not JSON-RPC
	traceID    string          // "" without tracing
}

// write sends an error response made by breakwater itself.
func (e errorReply) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-Breakwater-Error", string(e.kind))
	h.Set("Cache-Control", "no-store")
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(e.retryAfter), 10))
	}
	var body []byte
	if e.mode == errorsJSONRPC || (e.mode == errorsAuto && e.rpc != nil) {
		h.Set("Content-Type", "application/json")
		body = e.jsonrpcBody()
	} else {
		h.Set("Content-Type", "application/problem+json")
		body = e.problemBody()
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// message is the error's detail: its own, or its kind's.
func (e errorReply) message() string {
	if e.detail != "" {
		return e.detail
	}
	return details[e.kind]
}

func (e errorReply) retrySeconds() *int64 {
	if e.retryAfter <= 0 {
		return nil
	}
	s := ratelimit.RetryAfterSeconds(e.retryAfter)
	return &s
}

// problemBody is RFC 9457 problem details.
func (e errorReply) problemBody() []byte {
	b, _ := json.Marshal(struct {
		Type       string `json:"type"`
		Title      string `json:"title"`
		Status     int    `json:"status"`
		Detail     string `json:"detail"`
		Route      string `json:"route"`
		RequestID  string `json:"request_id"`
		RetryAfter *int64 `json:"retry_after_seconds,omitempty"`
		TraceID    string `json:"trace_id,omitempty"`
	}{
		Type:  "https://breakwater.dev/errors/" + string(e.kind),
		Title: titles[e.kind], Status: e.status, Detail: e.message(),
		Route: e.route, RequestID: e.requestID, RetryAfter: e.retrySeconds(), TraceID: e.traceID,
	})
	return b
}

// jsonrpcBody is a JSON-RPC 2.0 error response to the request's id.
func (e errorReply) jsonrpcBody() []byte {
	id := json.RawMessage("null")
	if e.rpc != nil && e.rpc.id != nil {
		id = e.rpc.id
	}
	msg := e.message()
	if s := e.retrySeconds(); s != nil {
		msg += " Try again in " + strconv.FormatInt(*s, 10) + " seconds."
	} else if e.kind == KindTimeout || e.kind == KindUpstreamUnreachable {
		msg += " Trying again later may work."
	}
	b, _ := json.Marshal(rpcResponse{JSONRPC: "2.0", ID: id, Error: rpcError{
		Code: jsonrpcCodes[e.kind], Message: msg,
		Data: rpcErrorData{Kind: e.kind, RetryAfter: e.retrySeconds(), RequestID: e.requestID, Route: e.route, TraceID: e.traceID},
	}})
	return b
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   rpcError        `json:"error"`
}

type rpcError struct {
	Code    int          `json:"code"`
	Message string       `json:"message"`
	Data    rpcErrorData `json:"data"`
}

type rpcErrorData struct {
	Kind       Kind   `json:"kind"`
	RetryAfter *int64 `json:"retry_after_seconds"`
	RequestID  string `json:"request_id"`
	Route      string `json:"route,omitempty"`
	TraceID    string `json:"trace_id,omitempty"`
}

// jsonrpcRequest is what breakwater learned about a JSON-RPC request body.
type jsonrpcRequest struct {
	id json.RawMessage // the request's id; null for a batch (nil is answered as null too)
}
