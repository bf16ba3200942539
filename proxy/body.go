package proxy

import (
	"bytes"
	"context"
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

// readAhead is the part of a client's body read before it is sent: to
// read the JSON-RPC call, then to replay. One buffer, filled from the
// client's body once, grown only when a later reader needs more of it.
type readAhead struct {
	src   io.ReadCloser // the client's body (clientBody); nil until the first read
	buf   []byte
	whole bool // buf holds the whole body
}

// readAhead reads r's body into rq's buffer until it holds more than
// limit bytes, or all of it, reading only what earlier calls did not; a
// body whose Content-Length is over limit is not read. r.Body is then the
// buffer followed by the rest. It returns the body's failure (too large
// for max_body, broken, stalled).
func (rq *request) readAhead(r *http.Request, limit int64) error {
	a := &rq.ahead
	if a.whole || int64(len(a.buf)) > limit || r.ContentLength > limit {
		return nil
	}
	if a.src == nil {
		a.src = r.Body
	}
	more, err := io.ReadAll(io.LimitReader(a.src, limit+1-int64(len(a.buf))))
	if a.buf == nil {
		a.buf = more
	} else {
		a.buf = append(a.buf, more...)
	}
	if err != nil {
		if cause := rq.bodyFailure(); cause != nil {
			return cause
		}
		return bodyError(err)
	}
	a.whole = int64(len(a.buf)) <= limit
	if a.whole {
		r.Body = io.NopCloser(bytes.NewReader(a.buf))
		r.ContentLength = int64(len(a.buf))
	} else {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(a.buf), a.src), a.src}
	}
	return nil
}

// prepareBody buffers what must be buffered, in the buffer the JSON-RPC
// read used: a body that attempts may replay (up to the pipeline's replay
// limit). A body held whole, for replay or for its JSON-RPC call, can be
// sent again (a retry, or the resend after an upstream 401); a larger one
// streams through untouched, sent once.
func (rt *route) prepareBody(r *http.Request, rq *request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	replay := rt.replayLimit(r.Method)
	if replay > 0 {
		if err := rq.readAhead(r, replay); err != nil {
			return err
		}
	}
	// Not beyond the route's own limits: routing may have read more (the
	// table's detection limit) than retry.max_body lets a route resend.
	if buf := rq.ahead.buf; rq.ahead.whole && int64(len(buf)) <= max(replay, rt.detectMax) {
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	}
	return nil
}

// mayBeJSONRPC: SPEC's JSON-RPC requests are POSTs with a JSON body.
func mayBeJSONRPC(r *http.Request) bool {
	return r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody && isJSON(r.Header.Get("Content-Type"))
}

type readCloser struct {
	io.Reader
	io.Closer
}
