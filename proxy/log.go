package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"time"
)

// logWriter records the status and size written, for the access log. It
// unwraps for http.ResponseController, so ReverseProxy can still flush
// (SSE) and hijack (WebSocket) the connection underneath.
type logWriter struct {
	http.ResponseWriter
	status  int
	written int64
	// closeConn asks for "Connection: close" on the final response. It is
	// set here, as the header goes out, because ReverseProxy clears the
	// header map after relaying a 1xx (100 Continue).
	closeConn bool
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	if w.closeConn && code >= 200 {
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// Flush lets ReverseProxy flush each SSE event as it arrives.
func (w *logWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection to a WebSocket splice.
func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes the access-log line and counts the request. It runs from a
// defer: ReverseProxy aborts a broken stream by panicking with
// http.ErrAbortHandler, and that request must be logged too.
func (s *Server) finish(w *logWriter, r *http.Request, rq *request) {
	rec := recover()
	d := time.Since(rq.start)
	status := w.status
	switch {
	case rq.errKind == kindClientClosed:
		status = StatusClientClosed
	case rec != nil && r.Context().Err() != nil:
		// The client left mid-response and ReverseProxy aborted the copy.
		status, rq.errKind = StatusClientClosed, kindClientClosed
	case rec != nil && status == 0:
		status = http.StatusBadGateway
	case status == 0:
		status = http.StatusOK
	}
	routeName := ""
	if rq.route != nil {
		routeName = rq.route.name
	}
	s.metrics.Request(routeName, r.Method, status, rq.outcome, d)
	if rq.cacheRes != "" {
		s.metrics.CacheLookup(routeName, rq.cacheRes)
	}
	if t := s.table.Load(); t == nil || t.cfg.Log.AccessLog {
		ev := s.log.Info()
		if status >= 500 || (rec != nil && rq.errKind != kindClientClosed) {
			ev = s.log.Warn()
		}
		if ev.Enabled() {
			ev = ev.Str("request_id", rq.id).Str("route", routeName).Str("method", r.Method).
				Str("path", r.URL.Path).Int("status", status).
				Float64("duration_ms", float64(d.Microseconds())/1000).
				Int("attempts", rq.trace.Attempts)
			if rq.route != nil {
				ev = ev.Str("upstream", rq.route.up.name)
			}
			if rq.cacheRes != "" {
				ev = ev.Str("cache", rq.cacheRes)
			}
			if rq.trace.Breaker != "" {
				ev = ev.Str("breaker", rq.trace.Breaker)
			}
			if rq.errKind != "" {
				ev = ev.Str("error", string(rq.errKind))
			} else if rec != nil {
				ev = ev.Str("error", "stream_aborted")
			}
			ev.Str("outcome", rq.outcome).Msg("request")
		}
	}
	if rec != nil {
		if err, ok := rec.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
			s.log.Error().Interface("panic", rec).Str("request_id", rq.id).Msg("handler panic")
		}
		panic(rec)
	}
}
