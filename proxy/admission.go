package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// A request's way in, before ReverseProxy: the table's own checks, which
// find its route (admit), then the route's admission, a list of steps
// built once per config from typed values (admission). A step that refuses
// a request answers it itself; a feature that needs a say before the
// upstream is asked arrives as a step, not as a branch in ServeHTTP.

// step is one stage of a route's admission. It answers the request and
// returns false when the request goes no further. What a step holds (a
// tier slot, a cache flight) is given back by request.release, however
// the request ends.
type step func(s *Server, r *http.Request, rq *request) bool

// admission is a route's steps, in order: identify the caller, limit its
// rate, hold its tier slot, start the route's clock, ready the body,
// answer from the cache, fail fast. Only the steps the route's config
// calls for are in the list.
func admission(t *table, rt *route, limit *config.RateLimit) []step {
	var steps []step
	switch {
	case rt.clientAuth != authNone:
		steps = append(steps, (*Server).identify)
	case t.clients.keys.Len() > 0:
		steps = append(steps, (*Server).dropKnownKey)
	}
	switch {
	case limit != nil && limit.Key == "client":
		steps = append(steps, (*Server).limitClient)
	case rt.limiter != nil:
		steps = append(steps, (*Server).limitRoute)
	}
	if rt.clientAuth != authNone {
		steps = append(steps, (*Server).holdSlot)
	}
	steps = append(steps, (*Server).startClock, (*Server).readyBody)
	if rt.cache != nil {
		steps = append(steps, (*Server).serveCached)
	}
	return append(steps, (*Server).checkUpstream)
}

// clientAuth is a route's client_auth, parsed once.
type clientAuth uint8

const (
	authNone clientAuth = iota
	authOptional
	authRequired
)

func clientAuthOf(s string) clientAuth {
	switch s {
	case "required":
		return authRequired
	case "optional":
		return authOptional
	}
	return authNone
}

// errorMode is a route's errors setting, parsed once: the form of
// breakwater's own error answers.
type errorMode uint8

const (
	errorsAuto    errorMode = iota // JSON-RPC to a JSON-RPC request, else problem
	errorsProblem                  // always RFC 9457 problem details
	errorsJSONRPC                  // always JSON-RPC
)

func errorModeOf(s string) errorMode {
	switch s {
	case "problem":
		return errorsProblem
	case "jsonrpc":
		return errorsJSONRPC
	}
	return errorsAuto
}

// admit runs the table's own checks, the same for every route: the header
// block's size, the client's body bounded, the path cleaned, the route
// matched (else no_route), the body's declared size and its JSON-RPC call.
// It returns the request the route's steps and ReverseProxy see, or false
// when it answered.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, rq *request) (*http.Request, bool) {
	t := rq.table
	rq.id = requestID(r)
	if tr := s.tracing.Load(); tr != nil {
		rq.startSpan(tr, r)
	}
	if len(r.TransferEncoding) > 0 && r.ProtoMajor == 1 {
		// A chunked request may have come with a Content-Length that Go
		// dropped (RFC 9112 §6.3: Transfer-Encoding wins, and the server
		// must close the connection after responding), so bytes after its
		// last chunk are never read as a next request: no smuggling.
		rq.lw.closeConn = true
	}
	if headerSize(r) > t.maxHeader {
		// net/http allows 4 KiB beyond MaxHeaderBytes; the limit is the
		// configured number.
		rq.lw.closeConn = true
		s.reject(rq, KindHeadersTooLarge, 0)
		return r, false
	}
	r = rq.boundBody(w, r)
	urlPath := cleanPath(r.URL.Path)
	if urlPath != r.URL.Path {
		r.URL.Path, r.URL.RawPath = urlPath, ""
	}
	rt, err := t.match(r, rq, urlPath)
	if err != nil {
		s.reject(rq, failureKind(err, rq.bodyFailure(), rq.client), 0)
		return r, false
	}
	if rt == nil {
		kind := KindNoRoute
		if refusedMethod(r.Method) {
			kind = KindMethodNotAllowed
		}
		s.rejectUnread(r, rq, kind, t.detectMax, 0)
		return r, false
	}
	rq.route = rt
	rq.lw.deadline.idle = rt.idle
	rq.lw.conn, _ = w.(writeDeadliner)
	if r.ContentLength > t.maxBody {
		s.reject(rq, KindBodyTooLarge, 0)
		return r, false
	}
	refuseUpgrade(r)
	// The JSON-RPC call, from the body alone, before anything counts it
	// (a batch counts once per element).
	if err := rq.readCall(r, rt.detectMax, t.batches); err != nil {
		s.reject(rq, failureKind(err, rq.bodyFailure(), rq.client), 0)
		return r, false
	}
	return r, true
}

// boundBody makes r the request the proxy works on: its context carries
// rq, and its body, if any, is read through rq.body, which bounds it.
//
// A body that breaks, stalls or grows past max_body ends the request:
// cancelling it tells the pipeline the attempt failed on our side, so
// that no breaker counts it against the upstream.
func (rq *request) boundBody(w http.ResponseWriter, r *http.Request) *http.Request {
	ctx := r.Context()
	rq.client = ctx
	hasBody := r.Body != nil && r.Body != http.NoBody
	if hasBody {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		rq.body = clientBody{rc: r.Body, left: rq.table.maxBody, rq: rq, cancel: cancel, deadline: idleDeadline{idle: rq.table.bodyIdle}}
		rq.body.conn, _ = w.(readDeadliner)
	}
	r = r.WithContext(context.WithValue(ctx, requestKey{}, rq))
	if hasBody {
		r.Body = &rq.body
	}
	return r
}

// release gives back what the request's steps held, once it is answered:
// a coalesced cache flight's waiters go (on every path, an aborted
// stream's panic included), the caller's tier slot, and the body's context.
func (rq *request) release() {
	rq.capture.release()
	if rq.tierSlot {
		rq.tier.conc.Release(rq.caller.ID)
	}
	if rq.body.cancel != nil {
		rq.body.cancel(nil)
	}
}

// startClock starts the route's one clock: it bounds a coalesced cache
// wait and the pipeline together. The request's place in the queues is
// the route's priority, or its caller's tier's where that is higher.
func (s *Server) startClock(_ *http.Request, rq *request) bool {
	rt := rq.route
	rq.deadline = time.Now().Add(rt.timeout)
	rq.trace.Deadline = rq.deadline
	rq.trace.Priority = rt.priority
	if rq.tier != nil {
		rq.trace.Priority = max(rq.trace.Priority, rq.tier.priority)
	}
	return true
}

// readyBody buffers what attempts may replay (prepareBody) and takes the
// JSON-RPC body's word on repeating it (decideRepeat).
func (s *Server) readyBody(r *http.Request, rq *request) bool {
	if err := rq.route.prepareBody(r, rq); err != nil {
		s.reject(rq, failureKind(err, rq.bodyFailure(), rq.client), 0)
		return false
	}
	rq.route.decideRepeat(r, rq)
	return true
}

// checkUpstream lets the request go on to its upstream unless that must
// not be asked (unhealthy, or in cache_only mode): failFast answers then.
func (s *Server) checkUpstream(r *http.Request, rq *request) bool {
	return !s.failFast(r, rq, rq.route)
}
