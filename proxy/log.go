package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"time"
)

// logWriter records the status and size written, for the access log. It
// unwraps for http.ResponseController, so ReverseProxy can still flush
// (SSE) and hijack (WebSocket) the connection underneath.
//
// It also bounds the client's side of the response: a client that stops
// reading holds a goroutine, a connection and, until its body is closed, a
// bulkhead slot. Every write moves the connection's write deadline
// stream_idle_timeout ahead (idleDeadline), and a write that passes it
// ends the response. net/http clears the deadline after
// the handler (and a hijack clears it for WebSockets).
type logWriter struct {
	http.ResponseWriter
	status  int
	written int64
	// closeConn asks for "Connection: close" on the final response. It is
	// set here, as the header goes out, because ReverseProxy clears the
	// header map after relaying a 1xx (100 Continue).
	closeConn bool
	stalled   bool // a write passed its deadline: the client stopped reading

	conn     writeDeadliner // nil: no deadline can be set
	deadline idleDeadline   // the route's stream_idle_timeout
}

// writeDeadliner is the server's ResponseWriter, HTTP/1 or HTTP/2.
type writeDeadliner interface {
	SetWriteDeadline(time.Time) error
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	if code >= 200 {
		if w.closeConn {
			w.Header().Set("Connection", "close")
		}
		w.arm()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.arm()
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		w.stalled = true
	}
	return n, err
}

// arm moves the write deadline forward before a write.
func (w *logWriter) arm() {
	if w.conn == nil {
		return
	}
	if dl, ok := w.deadline.next(); ok {
		_ = w.conn.SetWriteDeadline(dl)
	}
}

// Flush lets ReverseProxy flush each SSE event as it arrives.
func (w *logWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.arm()
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		w.stalled = true
	}
}

// Hijack hands the connection to a WebSocket splice.
func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes the access-log line and counts the request. It runs from a
// defer: ReverseProxy aborts a broken stream by panicking with
// http.ErrAbortHandler, and that request must be logged too.
func (s *Server) finish(r *http.Request, rq *request) {
	rec := recover()
	w := &rq.lw
	d := time.Since(rq.start)
	status := w.status
	if rec != nil {
		// The response was cut after it started: decide why, once.
		if k := abortKind(r.Context().Err() != nil, w.stalled); k != "" {
			rq.errKind = k
		}
	}
	switch {
	case rq.errKind == kindClientClosed:
		status = StatusClientClosed
	case rec != nil && status == 0:
		status = http.StatusBadGateway
	case status == 0:
		status = http.StatusOK
	}
	routeName, tool := "", ""
	if rq.route != nil {
		// A request that matched no route takes no tool label.
		routeName, tool = rq.route.name, s.tools.Label(rq.call.tool)
	}
	if rq.span.Started() {
		rq.endSpan(r, routeName, status)
	}
	s.metrics.Request(routeName, r.Method, status, rq.outcome, tool, d)
	if rq.cacheRes != "" {
		s.metrics.CacheLookup(routeName, rq.cacheRes)
	}
	// The table the request started on decides, not one a reload swapped
	// in meanwhile.
	if t := rq.table; t == nil || t.accessLog {
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
			if rq.caller != nil {
				ev = ev.Str("client", rq.caller.ID) // the id from the keys file, never the key
			}
			if rq.call.method != "" {
				ev = ev.Str("rpc_method", clip(rq.call.method))
				if rq.call.tool != "" {
					ev = ev.Str("tool", clip(rq.call.tool))
				}
			}
			if rq.jsonrpc.Batch {
				ev = ev.Int("rpc_batch", len(rq.jsonrpc.Messages))
			}
			if rq.traceID != "" {
				ev = ev.Str("trace_id", rq.traceID)
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
