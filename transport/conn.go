package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"time"
)

// conn is one keep-alive connection to an upstream. A busy conn belongs to
// the one request it serves; an idle one to its pool.
type conn struct {
	p      *pool
	nc     net.Conn
	closer func() // closes nc; made once, handed to context.AfterFunc
	peer   peerCheck

	br       *bufio.Reader // pooled; held only while a response is read
	nwritten int64         // bytes of the current request that reached nc
	werr     error         // nc's write error, to tell it from a body error

	idleAt time.Time
	reused bool // has served a response before
}

func newConn(p *pool, nc net.Conn) *conn {
	c := &conn{p: p, nc: nc}
	c.closer = func() { nc.Close() }
	c.peer = newPeerCheck(nc)
	return c
}

// Write counts what reaches the upstream, for the retry rule.
func (c *conn) Write(b []byte) (int, error) {
	n, err := c.nc.Write(b)
	c.nwritten += int64(n)
	if err != nil && c.werr == nil {
		c.werr = err
	}
	return n, err
}

// sound reports whether an idle connection may carry a request: not idle
// past IdleConnTimeout, not closed by the upstream, and holding no bytes
// nobody asked for (which would be read as this request's response).
func (c *conn) sound() bool {
	if d := c.p.t.s.IdleConnTimeout; d > 0 && time.Since(c.idleAt) > d {
		return false
	}
	return c.peer.quiet()
}

// discard closes the connection and frees its slot.
func (c *conn) discard() {
	c.nc.Close()
	if c.br != nil {
		c.p.t.putReader(c.br)
		c.br = nil
	}
	c.p.drop()
}

// finish ends a response: the connection goes back to the pool when it
// may carry another request, and is closed otherwise. stop unregisters the
// context's AfterFunc; if that already ran, the connection is closed.
func (c *conn) finish(reusable bool, stop func() bool) {
	if stop != nil && !stop() {
		reusable = false
	}
	if reusable && c.br != nil && c.br.Buffered() > 0 {
		// Bytes past the response: the upstream is out of step with us.
		reusable = false
	}
	if !reusable {
		c.discard()
		return
	}
	if c.br != nil {
		c.p.t.putReader(c.br)
		c.br = nil
	}
	c.reused = true
	c.p.put(c)
}

// retryable marks an error after which the request may be sent again on a
// new connection, under net/http's rule (see H1.RoundTrip).
type retryable struct {
	err            error
	nothingWritten bool // no byte of the request reached the upstream
}

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// roundTrip sends req and reads the response header. On error the
// connection is closed (or, if nothing was sent, pooled again).
func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var stop func() bool
	if ctx.Done() != nil {
		// Cancellation closes the socket, which ends a blocked write or
		// read at once; no goroutine waits on ctx.
		stop = context.AfterFunc(ctx, c.closer)
	}

	c.nwritten, c.werr = 0, nil
	out, sent := withTrackedBody(req)
	bw := c.p.t.writer(c)
	err := out.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	c.p.t.putWriter(bw)
	written := err == nil
	if !written {
		switch {
		case ctx.Err() != nil:
			c.fail(stop)
			return nil, context.Cause(ctx)
		case c.werr == nil && c.nwritten == 0:
			// Refused before a byte left (a bad request line, say):
			// the connection is as good as before.
			if stop == nil || stop() {
				c.p.put(c)
			} else {
				c.discard()
			}
			return nil, err
		case c.werr == nil:
			// The request body failed (the client's upload broke): the
			// upstream waits for bytes that will never come. The body's
			// own error goes back, as http.Transport returns it.
			c.fail(stop)
			if sent != nil && sent.err != nil {
				return nil, sent.err
			}
			return nil, err
		case c.nwritten == 0:
			c.fail(stop)
			return nil, &retryable{err: fmt.Errorf("upstream: writing the request: %w", err), nothingWritten: true}
		}
		// The upstream stopped taking the request; it may have answered
		// first (a 413, then close), so read on.
	}

	rht := c.p.t.s.ResponseHeaderTimeout
	if rht > 0 {
		c.nc.SetReadDeadline(time.Now().Add(rht))
	}
	c.br = c.p.t.reader(c.nc)
	resp, err := c.readResponse(req)
	if err != nil {
		c.fail(stop)
		switch {
		case ctx.Err() != nil:
			return nil, context.Cause(ctx)
		case !written:
			return nil, fmt.Errorf("upstream: writing the request: %w", c.werr)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("upstream: no response header within %v: %w", rht, err)
		}
		return nil, err
	}
	if rht > 0 {
		c.nc.SetReadDeadline(time.Time{})
	}
	if !written {
		resp.Close = true
	}
	reusable := written && !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.finish(reusable, stop)
		return resp, nil
	}
	resp.Body = &body{c: c, rc: resp.Body, ctx: ctx, stop: stop, reusable: reusable}
	return resp, nil
}

// fail closes the connection after an error.
func (c *conn) fail(stop func() bool) {
	if stop != nil {
		stop()
	}
	c.discard()
}

// readResponse reads header blocks until the final response: 1xx interim
// responses (101 aside) are passed to the request's httptrace
// Got1xxResponse, as net/http's Transport does, so ReverseProxy relays
// them. Each block is scanned raw for Connection tokens before
// http.ReadResponse parses it, and the headers they nominate are removed.
func (c *conn) readResponse(req *http.Request) (*http.Response, error) {
	for n1xx := 0; ; n1xx++ {
		head, first, err := peekHead(c.br)
		if err != nil {
			if !first && n1xx == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
				// Nothing of a response came back: on a reused connection
				// this is the upstream closing it as we sent.
				return nil, &retryable{err: fmt.Errorf("upstream: connection closed before the response: %w", err)}
			}
			return nil, err
		}
		names, closing := connectionTokens(head)
		before := c.br.Buffered()
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, fmt.Errorf("upstream: malformed response: %w", err)
		}
		if before-c.br.Buffered() != len(head) {
			// The parser saw a different header block than the scan did;
			// do not trust either.
			return nil, errors.New("upstream: malformed response header")
		}
		stripNominated(resp.Header, names)
		if closing {
			resp.Close = true
		}
		code := resp.StatusCode
		if code < 100 {
			return nil, fmt.Errorf("upstream: malformed response: status %03d", code)
		}
		if code == http.StatusSwitchingProtocols {
			// Upgrades take the standard path; a 101 here was not asked for.
			return nil, errors.New("upstream: switched protocols without an upgrade request")
		}
		if code >= 200 {
			return resp, nil
		}
		if n1xx+1 > max1xx {
			return nil, fmt.Errorf("upstream: more than %d interim (1xx) responses", max1xx)
		}
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// trackedBody keeps the first error of a request body. Request.Write
// hides it in an unexported type without Unwrap, and the caller must get
// it back as is (its kind decides the status, e.g. a body read timeout).
type trackedBody struct {
	io.ReadCloser
	err error
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// withTrackedBody returns the request to write: req itself when it has no
// body, else a copy whose body is tracked (RoundTrip must not modify req).
func withTrackedBody(req *http.Request) (*http.Request, *trackedBody) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	w := &struct {
		req  http.Request
		body trackedBody
	}{req: *req, body: trackedBody{ReadCloser: req.Body}}
	w.req.Body = &w.body
	return &w.req, &w.body
}
