package proxy

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/cache"
)

// The route cache on the request path: a fresh hit answers before the
// pipeline, a stale entry waits in the request state in case the upstream
// fails, and concurrent misses coalesce behind one upstream request.

// routeCache is a route's cache: policy, store and coalescing group.
type routeCache struct {
	policy cache.Policy
	store  cache.Store
	group  *cache.Group
}

// maxCoalesceWaiters bounds how many requests wait on one upstream miss.
const maxCoalesceWaiters = 1000

// capture tells modifyResponse to store a response (and release a flight).
type capture struct {
	c      *routeCache
	key    string
	flight *cache.Flight
	done   atomic.Bool
}

// release lets a flight's waiters go upstream themselves.
func (cp *capture) release() {
	if cp != nil && cp.flight != nil && cp.done.CompareAndSwap(false, true) {
		cp.flight.Done(nil)
	}
}

// answerFromCache answers from the cache, or joins a coalesced miss; it
// returns false when the request must go upstream, with rq.stale set when
// an old entry may answer a failure and rq.capture when the answer is to
// be stored.
//
// As an admission step it returns the opposite: true when the request
// goes on upstream.
func (s *Server) serveCached(r *http.Request, rq *request) bool {
	return !s.answerFromCache(&rq.lw, r, rq, rq.route)
}

func (s *Server) answerFromCache(w http.ResponseWriter, r *http.Request, rq *request, rt *route) bool {
	c := rt.cache
	lookup, store := c.policy.Rules(r)
	if !lookup && !store {
		return false
	}
	key := c.policy.Key(rt.name, cacheCaller(rt, rq), r)
	rq.cacheRes = "miss"
	now := time.Now()
	if lookup {
		if e, ok := c.store.Get(key); ok {
			switch c.policy.Freshness(e, now) {
			case cache.Fresh:
				s.answerHit(w, r, rq, e, now)
				return true
			case cache.Stale:
				rq.stale = e
			}
		}
	}
	if !store || !lookup {
		if store { // a client's no-cache: fetch afresh, but keep the answer
			rq.capture = &capture{c: c, key: key}
		}
		return false
	}
	// Concurrent misses for one key send one request upstream; the others
	// wait for its response on the route's one clock: a waiter that then
	// goes upstream itself has only what is left of its timeout.
	wctx, cancel := context.WithDeadline(r.Context(), rq.deadline)
	flight, shared, ok := c.group.Join(wctx, key)
	cancel()
	if ok {
		s.answerHit(w, r, rq, shared, time.Now())
		return true
	}
	if flight != nil {
		// A leader that finished between our lookup and Join has stored its
		// entry (it stores before Flight.Done): look again rather than lead
		// a second upstream request for an answer that is already here.
		if e, found := c.store.Get(key); found && c.policy.Freshness(e, time.Now()) == cache.Fresh {
			flight.Done(e)
			s.answerHit(w, r, rq, e, time.Now())
			return true
		}
	}
	rq.capture = &capture{c: c, key: key, flight: flight}
	return false
}

// cacheCaller is who the cache keys a request on (SPEC Part 3 "Cache and
// identity"): nobody on a route without client_auth, else the caller that
// identify found, or anonymous.
func cacheCaller(rt *route, rq *request) string {
	if rt.clientAuth == authNone {
		return ""
	}
	var id string
	if rq.caller != nil {
		id = rq.caller.ID
	}
	return rt.cache.policy.Caller(id)
}

func (s *Server) answerHit(w http.ResponseWriter, r *http.Request, rq *request, e *cache.Entry, now time.Time) {
	rq.cacheRes, rq.outcome = "hit", "cache_hit"
	writeEntry(w, r, e, rq.id, "hit", now)
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

// captureResponse arranges for an upstream answer to be stored once its
// body has been read whole, and releases a flight's waiters otherwise.
func captureResponse(resp *http.Response, cp *capture) {
	resp.Header.Set("X-Breakwater-Cache", "miss")
	if resp.Request.Method != http.MethodGet || !cp.c.policy.Storable(resp) {
		cp.release()
		return
	}
	answered := time.Now()
	status, header := resp.StatusCode, resp.Header.Clone()
	header.Del("X-Request-Id")
	header.Del("X-Breakwater-Cache")
	header.Del("RateLimit")
	header.Del("RateLimit-Policy")
	resp.Body = cache.Capture(resp.Body, cp.c.policy.MaxEntrySize, func(body []byte) {
		e := &cache.Entry{Status: status, Header: header, Body: body, Stored: answered}
		cp.c.store.Set(cp.key, e)
		if cp.flight != nil && cp.done.CompareAndSwap(false, true) {
			cp.flight.Done(e)
		}
	}, cp.release)
}
