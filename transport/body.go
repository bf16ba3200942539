package transport

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// maxDrain is how much of an unread body Close may discard to keep the
// connection, and only from bytes already received: Close never waits on
// the upstream.
const maxDrain = 64 << 10

var errBodyClosed = errors.New("upstream: read on closed response body")

// body is a response body. The connection goes back to the pool only at a
// clean end of the body; a read error, a cancelled context or a Close
// before the end closes it.
type body struct {
	c        *conn
	rc       io.ReadCloser // http.ReadResponse's body, reading from c.br
	ctx      context.Context
	stop     func() bool // unregisters the context's AfterFunc; nil if none
	reusable bool        // the request was fully written and nobody said close

	mu      sync.Mutex
	reading bool
	done    bool  // the connection was returned or closed
	closed  bool  // Close was called
	err     error // what Read returns once done
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return 0, errBodyClosed
	case b.done:
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.rc.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	switch {
	case err == io.EOF && !b.closed:
		b.end(true, err)
	case err != nil || b.closed:
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		} else if err == nil {
			err = errBodyClosed
		}
		b.end(false, err)
	}
	return n, err
}

// Close before the end keeps the connection only if the rest of the body
// is already buffered and small; otherwise it closes the connection, so an
// abandoned stream costs the upstream nothing more.
func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	switch {
	case b.done:
	case b.reading:
		// A Read is blocked in another goroutine: closing the socket
		// ends it, and it closes the connection as it returns.
		b.c.nc.Close()
	default:
		b.end(b.drain(), errBodyClosed)
	}
	return nil
}

// drain discards what is left of the body if it has all arrived already.
// The std body's own Close would read to the end however long that takes,
// so it is never called before the end.
func (b *body) drain() bool {
	if !b.reusable || b.ctx.Err() != nil {
		return false
	}
	b.c.nc.SetReadDeadline(time.Unix(1, 0)) // only bytes already buffered
	_, err := io.CopyN(io.Discard, b.rc, maxDrain)
	if err != io.EOF {
		return false
	}
	b.c.nc.SetReadDeadline(time.Time{})
	return true
}

func (b *body) end(clean bool, err error) {
	b.done = true
	b.err = err
	b.c.finish(clean && b.reusable, b.stop)
	b.c = nil
}
