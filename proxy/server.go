// Package proxy is breakwater's data plane: it matches a request to a
// route, applies the route's ingress rate limit and cache, and forwards it
// through httputil.ReverseProxy whose transport is the route's policy
// pipeline. Every failure ends in classify (errors.go), the one place that
// knows breakwater's error kinds.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// Server is the data-plane handler. It is safe for concurrent use; Load
// swaps its config atomically.
type Server struct {
	log     zerolog.Logger
	metrics Observer
	buffers *bufferPool

	mu       sync.Mutex // serialises Load
	table    atomic.Pointer[table]
	registry *policy.Registry
}

// New returns a Server with no config, reporting to obs
// (observe.Fanout in breakwater); call Load before serving.
func New(log zerolog.Logger, obs Observer) *Server {
	s := &Server{log: log, metrics: obs, buffers: newBufferPool(), registry: policy.NewRegistry()}
	obs.FollowBreakers(s.breakers)
	return s
}

// Load builds cfg's routing and swaps it in. Stateful policies whose
// settings did not change are carried over; requests in flight finish on
// the table they started with. On error the running config is kept.
func (s *Server) Load(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.registry.Next()
	t, err := s.build(cfg, reg)
	if err != nil {
		return err
	}
	old := s.table.Swap(t)
	s.registry = reg
	reg.Commit()
	if old != nil {
		// Transports the new table does not use are closed once their
		// in-flight requests are done: idle connections now, the rest when
		// they turn idle (a later pass).
		for tr := range old.transports {
			if !t.transports[tr] {
				tr.CloseIdleConnections()
				time.AfterFunc(old.cfg.Server.ShutdownTimeout.D()+time.Second, tr.CloseIdleConnections)
			}
		}
	}
	return nil
}

// Config is the running config.
func (s *Server) Config() *config.Config {
	if t := s.table.Load(); t != nil {
		return t.cfg
	}
	return nil
}

// request is what the proxy knows about one request, kept in its context.
type request struct {
	lw        logWriter // the response writer, in the same allocation
	idHdr     []string  // []string{id}, shared by the upstream request and the response
	idArr     [1]string // idHdr's backing array
	start     time.Time
	id        string
	route     *route
	trace     policy.Trace
	rpc       *jsonrpcRequest
	outcome   string // upstream, cache_hit, stale, fallback, rejected
	cacheRes  string // hit, miss, stale ("" = no cache)
	errKind   Kind
	stale     *cache.Entry // an entry that may answer if the upstream fails
	tooLarge  atomic.Bool
	malformed atomic.Bool // the client's body was not valid HTTP framing
}

// idHeader is the request id as a header value, built once.
func (rq *request) idHeader() []string {
	if rq.idHdr == nil {
		rq.idArr[0] = rq.id
		rq.idHdr = rq.idArr[:1:1] // in the request's own allocation
	}
	return rq.idHdr
}

// PolicyTrace lets the pipeline fill the request's trace: the request and
// its trace travel as one context value.
func (rq *request) PolicyTrace() *policy.Trace { return &rq.trace }

func requestFrom(ctx context.Context) *request {
	rq, _ := policy.TracerFrom(ctx).(*request)
	return rq
}

// ServeHTTP handles one data-plane request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{start: time.Now(), outcome: "upstream"}
	lw := &rq.lw
	lw.ResponseWriter = w
	defer s.finish(lw, r, rq)
	t := s.table.Load()
	rq.id = requestID(r)
	if len(r.TransferEncoding) > 0 && r.ProtoMajor == 1 {
		// A chunked request may have come with a Content-Length that Go
		// dropped (RFC 9112 §6.3: Transfer-Encoding wins, and the server
		// must close the connection after responding), so bytes after its
		// last chunk are never read as a next request: no smuggling.
		lw.closeConn = true
	}

	urlPath := cleanPath(r.URL.Path)
	if urlPath != r.URL.Path {
		r.URL.Path, r.URL.RawPath = urlPath, ""
	}
	rt := t.match(r, urlPath)
	if rt == nil {
		rq.rpc = sniffJSONRPC(r, min(t.maxBody, 1<<20))
		s.reject(lw, rq, errNoRoute, 0)
		return
	}
	rq.route = rt
	if r.ContentLength > t.maxBody {
		s.reject(lw, rq, errBodyTooLarge, 0)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// A body that grows past max_body ends the request: cancelling it
		// tells the pipeline the attempt failed on our side, so that no
		// breaker counts a client's oversized upload against the upstream.
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		r = r.WithContext(ctx)
		r.Body = &limitedBody{rc: r.Body, left: t.maxBody, rq: rq, cancel: cancel}
	}
	refuseUpgrade(r)

	if rt.limiter != nil {
		key := ""
		switch k := rt.limit.Key; {
		case k == "client_ip":
			key = t.trusted.clientIP(r)
		case len(k) > 7 && k[:7] == "header:":
			key = r.Header.Get(k[7:])
		}
		d := rt.limiter.Take(key, rt.limit.MaxWait.D())
		ratelimit.SetHeaders(lw.Header(), rt.name, rt.limit.Rate, rt.limit.Burst, d)
		if !d.Allowed {
			s.metrics.RouteRateLimited(rt.name)
			if rt.errors != "problem" {
				// Rejected before its body was read: learn its JSON-RPC id
				// so the error comes in the caller's own protocol.
				limit := rt.replayMax
				if limit <= 0 {
					limit = 1 << 20
				}
				rq.rpc = sniffJSONRPC(r, limit)
			}
			s.reject(lw, rq, errRateLimited, d.RetryAfter)
			return
		}
		if d.Wait > 0 && !sleepCtx(r.Context(), d.Wait) {
			rq.errKind, rq.outcome = kindClientClosed, "rejected"
			return
		}
	}
	if err := rt.prepareBody(r, rq); err != nil {
		s.reject(lw, rq, err, 0)
		return
	}
	ctx := policy.WithTracer(r.Context(), rq)
	r = r.WithContext(ctx)
	if rt.cache != nil {
		if s.serveCached(lw, r, rq, rt) {
			return
		}
		if cp, _ := r.Context().Value(captureKey{}).(*capture); cp != nil {
			// Waiters are released on every path, an aborted stream's panic included.
			defer cp.release()
		}
	}
	rt.proxy.ServeHTTP(lw, r)
}

// serveCached answers from the cache, or joins a coalesced miss; it
// returns false when the request must go upstream (with rq.stale set when
// an old entry may answer a failure).
func (s *Server) serveCached(w http.ResponseWriter, r *http.Request, rq *request, rt *route) bool {
	c := rt.cache
	lookup, store := c.policy.Rules(r)
	if !lookup && !store {
		return false
	}
	key := c.policy.Key(rt.name, r)
	rq.cacheRes = "miss"
	now := time.Now()
	if lookup {
		if e, ok := c.store.Get(key); ok {
			switch c.policy.Freshness(e, now) {
			case cache.Fresh:
				rq.cacheRes, rq.outcome = "hit", "cache_hit"
				writeEntry(w, r, e, rq.id, "hit", now)
				return true
			case cache.Stale:
				rq.stale = e
			}
		}
	}
	if !store || !lookup {
		if store { // a client's no-cache: fetch afresh, but keep the answer
			*r = *withCapture(r, &capture{c: c, key: key})
		}
		return false
	}
	// Concurrent misses for one key send one request upstream; the others
	// wait for its response, within their route timeout.
	wctx, cancel := context.WithTimeout(r.Context(), rt.timeout)
	flight, shared, ok := c.group.Join(wctx, key)
	cancel()
	if ok {
		rq.cacheRes, rq.outcome = "hit", "cache_hit"
		writeEntry(w, r, shared, rq.id, "hit", time.Now())
		return true
	}
	if flight != nil {
		// A leader that finished between our lookup and Join has stored its
		// entry (it stores before Flight.Done): look again rather than lead
		// a second upstream request for an answer that is already here.
		if e, found := c.store.Get(key); found && c.policy.Freshness(e, time.Now()) == cache.Fresh {
			flight.Done(e)
			rq.cacheRes, rq.outcome = "hit", "cache_hit"
			writeEntry(w, r, e, rq.id, "hit", time.Now())
			return true
		}
	}
	cp := &capture{c: c, key: key, flight: flight}
	*r = *withCapture(r, cp)
	return false
}

// capture tells modifyResponse to store a response (and release a flight).
type capture struct {
	c      *routeCache
	key    string
	flight *cache.Flight
	done   atomic.Bool
}

// release lets a flight's waiters go upstream themselves.
func (cp *capture) release() {
	if cp.flight != nil && cp.done.CompareAndSwap(false, true) {
		cp.flight.Done(nil)
	}
}

type captureKey struct{}

func withCapture(r *http.Request, cp *capture) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), captureKey{}, cp))
}

// writeEntry answers from a cache entry.
func writeEntry(w http.ResponseWriter, r *http.Request, e *cache.Entry, id, status string, now time.Time) {
	h := w.Header()
	e.CopyHeader(h)
	// The four fields share one backing array (capacity clipped, as Set
	// would leave them): a hit allocates once here rather than four times.
	v := make([]string, 4)
	v[0] = strconv.FormatInt(int64(e.Age(now)/time.Second), 10)
	v[1], v[2] = status, id
	v[3] = strconv.Itoa(len(e.Body))
	h["Age"], h["X-Breakwater-Cache"], h["X-Request-Id"], h["Content-Length"] = v[0:1:1], v[1:2:2], v[2:3:3], v[3:4:4]
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.Body)
	}
}

// modifyResponse runs on the upstream's answer before anything reaches the
// client.
func (s *Server) modifyResponse(resp *http.Response) error {
	rq := requestFrom(resp.Request.Context())
	if rq == nil {
		return nil
	}
	resp.Header["X-Request-Id"] = rq.idHeader()
	rt := rq.route
	if resp.StatusCode >= 500 && (rq.stale != nil || rt.fallback != nil) {
		return errUpstreamFailed // answered by stale or fallback in errorHandler
	}
	cp, _ := resp.Request.Context().Value(captureKey{}).(*capture)
	if cp == nil {
		return nil
	}
	resp.Header.Set("X-Breakwater-Cache", "miss")
	if resp.Request.Method != http.MethodGet || !cp.c.policy.Storable(resp) {
		cp.release()
		return nil
	}
	answered := time.Now()
	status, header := resp.StatusCode, resp.Header.Clone()
	header.Del("X-Request-Id")
	header.Del("X-Breakwater-Cache")
	header.Del("RateLimit")
	header.Del("RateLimit-Policy")
	resp.Body = cache.CaptureNotify(resp.Body, cp.c.policy.MaxEntrySize, func(body []byte) {
		e := &cache.Entry{Status: status, Header: header, Body: body, Stored: answered}
		cp.c.store.Set(cp.key, e)
		if cp.flight != nil && cp.done.CompareAndSwap(false, true) {
			cp.flight.Done(e)
		}
	}, cp.release)
	return nil
}

var errUpstreamFailed = errors.New("upstream answered with a server error")

// errorHandler answers a failed request: stale cache, then fallback, then
// breakwater's own error.
func (s *Server) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	rq := requestFrom(r.Context())
	if cp, _ := r.Context().Value(captureKey{}).(*capture); cp != nil {
		cp.release()
	}
	if rq.tooLarge.Load() {
		err = errBodyTooLarge
	} else if rq.malformed.Load() {
		err = errMalformedBody
	}
	kind, _ := classify(err)
	if kind == kindClientClosed && r.Context().Err() == nil {
		// The client is still here, so the cancellation was the pipeline's
		// own: the route timeout, which failsafe's executor reports as a
		// bare context.Canceled. Writing nothing would hand the client an
		// empty 200.
		err, kind = &policy.RejectedError{Err: policy.ErrTimeout}, KindTimeout
	}
	if errors.Is(err, errUpstreamFailed) {
		kind = ""
	}
	if kind == kindClientClosed {
		rq.errKind, rq.outcome = kind, "rejected"
		return
	}
	if kind != KindBodyTooLarge && kind != KindBadRequest {
		if e := rq.stale; e != nil {
			rq.cacheRes, rq.outcome, rq.errKind = "stale", "stale", kind
			writeEntry(w, r, e, rq.id, "stale", time.Now())
			return
		}
		if f := rq.route.fallback; f != nil {
			rq.outcome, rq.errKind = "fallback", kind
			h := w.Header()
			h.Set("Content-Type", f.ContentType)
			h.Set("X-Request-Id", rq.id)
			h.Set("Content-Length", strconv.Itoa(len(f.Body)))
			w.WriteHeader(f.Status)
			_, _ = io.WriteString(w, f.Body)
			return
		}
	}
	s.reject(w, rq, err, policy.RetryAfterOf(err))
}

// reject writes breakwater's own error for err.
func (s *Server) reject(w http.ResponseWriter, rq *request, err error, retryAfter time.Duration) {
	kind, status := classify(err)
	rq.errKind, rq.outcome = kind, "rejected"
	if kind == kindClientClosed {
		return
	}
	if kind == KindBadRequest {
		w.Header().Set("Connection", "close") // the framing is lost: the connection cannot be trusted
	}
	reply := errorReply{kind: kind, status: status, retryAfter: retryAfter, requestID: rq.id, rpc: rq.rpc, mode: "auto"}
	if rq.route != nil {
		reply.route, reply.mode = rq.route.name, rq.route.errors
	}
	w.Header().Set("X-Request-Id", rq.id)
	reply.write(w)
}

// prepareBody buffers what must be buffered, once: a body that retries may
// replay (up to retry.max_body) and a JSON POST whose errors may have to
// be JSON-RPC. A larger body streams through untouched.
func (rt *route) prepareBody(r *http.Request, rq *request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	rpc := r.Method == http.MethodPost && rt.errors != "problem" && isJSON(r.Header.Get("Content-Type"))
	replay := rt.replayMax > 0 && rt.retryMethods[r.Method]
	if !rpc && !replay {
		return nil
	}
	limit := rt.replayMax
	if limit <= 0 {
		limit = 1 << 20
	}
	if r.ContentLength > limit && !rpc {
		return nil // too large to replay: sent once, never buffered
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		if rq.tooLarge.Load() {
			return errBodyTooLarge
		}
		return bodyError(err)
	}
	if int64(len(buf)) > limit {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	if rpc {
		rq.rpc = detectJSONRPC(buf)
	}
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.ContentLength = int64(len(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// sniffJSONRPC reads a JSON POST that no route takes, up to limit, so
// that a JSON-RPC client is told "no route" in JSON-RPC; nil when the body
// is not a JSON-RPC request or is too large to tell.
func sniffJSONRPC(r *http.Request, limit int64) *jsonrpcRequest {
	if r.Method != http.MethodPost || r.Body == nil || r.Body == http.NoBody ||
		r.ContentLength > limit || !isJSON(r.Header.Get("Content-Type")) {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(buf)) > limit {
		return nil
	}
	return detectJSONRPC(buf)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// limitedBody enforces server.max_body on bodies of unknown length.
type limitedBody struct {
	rc     io.ReadCloser
	left   int64
	rq     *request
	cancel context.CancelCauseFunc // the request's
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		b.rq.tooLarge.Store(true)
		b.cancel(errBodyTooLarge)
		return n, errBodyTooLarge
	}
	if err != nil && err != io.EOF {
		// The client's body broke (a bad chunk, a reset): that is the
		// client's failure, so the attempt must end as a cancellation,
		// never as an upstream failure a breaker would count.
		cause := bodyError(err)
		if errors.Is(cause, errMalformedBody) {
			b.rq.malformed.Store(true)
		}
		b.cancel(cause)
	}
	return n, err
}

// bodyError tells a client that went away from one that sent a malformed
// body and is still waiting for an answer (400). net/http cancels the
// request's context on either, so only the error itself can tell.
func bodyError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return context.Canceled
	}
	return errMalformedBody
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// bufferPool lends ReverseProxy its copy buffers instead of a fresh 32 KiB
// per request.
// It pools array pointers, so Put does not allocate a slice header.
type bufferPool struct{ p sync.Pool }

const copyBufferSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

func (b *bufferPool) Put(x []byte) {
	if cap(x) >= copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(x[:copyBufferSize]))
	}
}
