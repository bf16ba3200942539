package proxy

import (
	"net/http"
	"time"
)

// The request path's part of health checks and degraded mode (the checks
// themselves and the mode are package health): an upstream that its
// checker finds unhealthy, or that an operator put in cache_only mode, is
// failed fast before the pipeline.

// SetUpstreamMode sets the named upstream's mode (normal or cache_only);
// false when the running config has no such upstream.
func (s *Server) SetUpstreamMode(name, mode string) bool {
	t := s.table.Load()
	if t == nil || t.upstreams[name] == nil {
		return false
	}
	t.upstreams[name].mode.Set(mode)
	return true
}

// failFast answers a request whose upstream must not be asked (unhealthy,
// or in cache_only mode): from a stale entry or the fallback, else
// circuit_open; true when it answered. The fresh cache already had its
// turn (serveCached).
func (s *Server) failFast(r *http.Request, rq *request, rt *route) bool {
	var retryAfter time.Duration
	switch down, ra := rt.up.check.Unhealthy(); {
	case rt.up.mode.CacheOnly():
		rq.detail = "The upstream " + rt.up.name + " is in cache_only mode: only cached answers are served. Try again later."
	case down:
		retryAfter = ra
		rq.detail = "The upstream " + rt.up.name + " failed its health checks; it is not asked until they pass again."
	default:
		return false
	}
	rq.capture.release()
	if !s.answerInstead(r, rq, KindCircuitOpen) {
		s.reject(rq, KindCircuitOpen, retryAfter)
	}
	return true
}

// startChecks starts t's health checkers that are not running yet. Those
// a reload dropped are stopped by the registry's commit.
func startChecks(t *table) {
	for _, up := range t.upstreams {
		if up.check != nil {
			up.check.Start()
		}
	}
}
