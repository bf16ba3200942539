// Package proxy is breakwater's data plane: it matches a request to a
// route, applies the route's ingress rate limit and cache, and forwards it
// through httputil.ReverseProxy whose transport is the route's policy
// pipeline.
//
// Failures are decided once each. A request refused before it is sent
// (no route, rate limited, unauthorized…) is rejected with its kind where
// the refusal happens. A failed attempt or a broken client body goes
// through failureKind, which weighs the pipeline's error, the body's own
// failure and whether the client is still there. A response cut after it
// started gets abortKind's verdict in the access log only: its status is
// already sent. errors.go holds the kinds and, per kind, the status
// (statuses), title, detail and JSON-RPC code of breakwater's own error
// answers.
//
// What the request path asks but does not run lives beside it: an
// upstream's connections (transport.NewBase), its health checks and mode
// (health), the tracer's exporter (tracing); proxy builds them into the
// table and calls them per request.
package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/mcp"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/tracing"
)

// Server is the data-plane handler. It is safe for concurrent use; Load
// swaps its config atomically.
type Server struct {
	log     zerolog.Logger
	metrics Observer // metrics and /events: every observation goes here
	buffers *bufferPool

	mu       sync.Mutex // serialises Load
	table    atomic.Pointer[table]
	registry *lifecycle.Registry // everything a config built that may outlive it; Close closes it

	tools   mcp.Labels                     // the metrics' tool label values, kept across reloads
	tracing atomic.Pointer[tracing.Tracer] // nil: no tracing block
	keyer   auth.Keyer                     // fingerprints auth blocks, secrets included (proxy/auth.go)
}

// New returns a Server with no config, reporting to obs
// (observe.Fanout in breakwater); call Load before serving.
func New(log zerolog.Logger, obs Observer) *Server {
	s := &Server{log: log, metrics: obs, buffers: newBufferPool(), registry: lifecycle.New(), keyer: auth.NewKeyer()}
	obs.FollowBreakers(s.breakers)
	obs.FollowTokens(s.tokens)
	return s
}

// Load builds cfg's routing and swaps it in. Stateful policies whose
// settings did not change are carried over; requests in flight finish on
// the table they started with. On error the running config is kept, and
// whatever the failed build made is closed.
func (s *Server) Load(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.registry.Next()
	t, err := s.build(cfg, reg)
	var tr *tracing.Tracer
	if err == nil {
		tr, err = tracing.Of(cfg.Tracing, reg)
	}
	if err != nil {
		reg.Discard()
		return err
	}
	s.tools.Configure(cfg.ToolNames(), cfg.MCP.MaxTools)
	old := s.table.Swap(t)
	s.tracing.Store(tr)
	startChecks(t)
	// What the new config dropped is closed: background work at once,
	// what the old table's requests may still use (connections, the store
	// client, the tracer) once they have had shutdown_timeout to finish.
	var grace time.Duration
	if old != nil {
		grace = old.cfg.Server.ShutdownTimeout.D() + time.Second
	}
	s.registry = reg
	reg.Commit(grace)
	return nil
}

// Close stops everything the Server started — health checks, token
// renewal, store clients, upstream connections, tracers (spans not yet
// exported are flushed) — and waits for all of it, or until ctx ends. It
// may be called more than once. The Server is not to serve afterwards.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tracing.Store(nil)
	return s.registry.Close(ctx)
}

// Config is the running config.
func (s *Server) Config() *config.Config {
	if t := s.table.Load(); t != nil {
		return t.cfg
	}
	return nil
}

// ServeHTTP handles one data-plane request: the table's checks match it
// to a route (admit: header size, body bounds, path, route, JSON-RPC
// call), the route's admission steps run in order (admission: identify,
// rate limit, tier slot, clock, body, cache, fail fast), and the route's
// ReverseProxy, whose transport is the route's policy pipeline, sends what
// they let through. Whichever refuses the request answers it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{start: time.Now(), outcome: "upstream", table: s.table.Load()}
	rq.lw.ResponseWriter = w
	defer s.finish(r, rq)
	defer rq.release()
	r, ok := s.admit(w, r, rq)
	if !ok {
		return
	}
	for _, step := range rq.route.steps {
		if !step(s, r, rq) {
			return
		}
	}
	rq.route.proxy.ServeHTTP(&rq.lw, r)
}

// modifyResponse runs on the upstream's answer before anything reaches the
// client.
func (s *Server) modifyResponse(resp *http.Response) error {
	rq := requestFrom(resp.Request.Context())
	if rq == nil {
		return nil
	}
	resp.Header["X-Request-Id"] = rq.idHeader()
	s.watchToolsList(resp, rq)
	if resp.StatusCode >= 500 && (rq.stale != nil || rq.route.fallback != nil) {
		return errUpstreamFailed // answered by stale or fallback in errorHandler
	}
	if rq.capture != nil {
		captureResponse(resp, rq.capture)
	}
	return nil
}

var errUpstreamFailed = errors.New("upstream answered with a server error")

// errorHandler answers a request the pipeline failed: the one decision of
// what the failure was (failureKind), then stale cache, then fallback,
// then breakwater's own error.
func (s *Server) errorHandler(_ http.ResponseWriter, r *http.Request, err error) {
	rq := requestFrom(r.Context())
	rq.capture.release()
	if errors.Is(err, errUpstreamFailed) {
		s.answerInstead(r, rq, "") // the upstream's own 5xx is no error of ours
		return
	}
	kind := failureKind(err, rq.bodyFailure(), rq.client)
	if d := failureDetail(kind, err); d != "" {
		rq.detail = d
	}
	if clientsFault(kind) || !s.answerInstead(r, rq, kind) {
		s.reject(rq, kind, policy.RetryAfterOf(err))
	}
}

// clientsFault: kinds that stale entries and fallbacks never answer, since
// the client's own request was the problem (or the client is gone).
func clientsFault(k Kind) bool {
	switch k {
	case KindBodyTooLarge, KindBadRequest, KindRequestTimeout, kindClientClosed:
		return true
	}
	return false
}

// answerInstead answers a failure with a stale entry or the route's
// fallback; false when there is neither.
func (s *Server) answerInstead(r *http.Request, rq *request, kind Kind) bool {
	w := &rq.lw
	if e := rq.stale; e != nil {
		rq.cacheRes, rq.outcome, rq.errKind = "stale", "stale", kind
		writeEntry(w, r, e, rq.id, "stale", time.Now())
		return true
	}
	f := rq.route.fallback
	if f == nil {
		return false
	}
	rq.outcome, rq.errKind = "fallback", kind
	h := w.Header()
	h.Set("Content-Type", f.ContentType)
	h.Set("X-Request-Id", rq.id)
	h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	w.WriteHeader(f.Status)
	_, _ = io.WriteString(w, f.Body)
	return true
}

// rejectUnread rejects a request before its body was read (no route, rate
// limited). Its JSON body, if any, is read first, up to limit, so that a
// JSON-RPC client is answered in JSON-RPC; a body that stalls or breaks
// meanwhile decides the answer instead.
func (s *Server) rejectUnread(r *http.Request, rq *request, kind Kind, limit int64, retryAfter time.Duration) {
	if rq.route == nil || rq.route.errors != errorsProblem {
		// A batch read here is answered (with id null) in the kind that
		// stands; a body that broke, stalled or is refused decides instead.
		err := rq.readCall(r, limit, true)
		if err != nil && !errors.Is(err, errBodyTooLarge) { // too large to tell: the kind stands
			kind, retryAfter = failureKind(err, err, rq.client), 0
		}
	}
	s.reject(rq, kind, retryAfter)
}

// reject writes breakwater's own error of the given kind.
func (s *Server) reject(rq *request, kind Kind, retryAfter time.Duration) {
	rq.errKind, rq.outcome = kind, "rejected"
	if kind == kindClientClosed {
		return
	}
	w := &rq.lw
	switch kind {
	case KindRequestTimeout:
		w.closeConn = true // the framing is lost: the connection cannot be trusted
	case KindBadRequest:
		w.closeConn = rq.bodyFailure() != nil // a malformed chunk; a refused JSON-RPC body was read whole
	case KindMethodNotAllowed:
		w.Header().Set("Allow", allowedMethods)
	}
	reply := errorReply{kind: kind, status: statuses[kind], retryAfter: retryAfter, requestID: rq.id, rpc: rq.rpc, detail: rq.detail, traceID: rq.traceID}
	if rq.route != nil {
		reply.route, reply.mode = rq.route.name, rq.route.errors
	}
	w.Header().Set("X-Request-Id", rq.id)
	reply.write(w)
}

// refusedMethod: CONNECT would open a tunnel and TRACE reflects the
// request, injected credentials included; neither is forwarded unless a
// route lists it in match.methods.
func refusedMethod(m string) bool { return m == http.MethodConnect || m == http.MethodTrace }

// allowedMethods is the Allow header of a refused CONNECT or TRACE.
const allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// headerSize is the request's header block as net/http counted it against
// MaxHeaderBytes: request line, Host and every field line.
func headerSize(r *http.Request) int64 {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len(r.Host) + 8
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}
