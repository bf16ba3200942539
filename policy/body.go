package policy

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

type readCloser = io.ReadCloser

// maxDrain bounds how much of a discarded response is read so that its
// connection can be reused; a larger body is cheaper to abandon.
const maxDrain = 64 << 10

// respBody is the body of every response an attempt receives. It owns the
// attempt's own context when it has one (cancelled on Close), and for the
// response that is returned (final), the request's bulkhead slot and
// context (reqState.finish) and the stream idle timer.
type respBody struct {
	rc        io.ReadCloser
	st        *reqState
	cancel    context.CancelFunc
	timedOut  atomic.Bool // per_try_timeout fired
	hasResp   atomic.Bool // headers arrived
	abandoned atomic.Bool // cancelled by us before headers: a losing hedge
	hedge     bool

	final     bool
	idle      time.Duration
	idleTimer *time.Timer // the request's timer, stopped; Read arms it
	closeOnce sync.Once
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.idleTimer == nil {
		return b.rc.Read(p)
	}
	// Only time spent waiting on the upstream counts as idle; a slow
	// client does not end a live stream.
	b.idleTimer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.idleTimer.Stop()
	return n, err
}

func (b *respBody) Close() error {
	var err error
	b.closeOnce.Do(func() {
		if b.idleTimer != nil {
			b.idleTimer.Stop()
		}
		err = b.rc.Close()
		b.cancel()
		if b.final {
			b.st.finish()
		}
	})
	return err
}

// park reads a small discarded body into memory and releases the
// connection; a large one is left open (discard will abandon it).
func (b *respBody) park() {
	buf, err := io.ReadAll(io.LimitReader(b.rc, maxDrain+1))
	if err != nil || len(buf) > maxDrain {
		b.rc = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), b.rc), b.rc}
		return
	}
	_ = b.rc.Close()
	b.cancel()
	b.rc = io.NopCloser(bytes.NewReader(buf))
}

// discard drains (bounded) and closes a response nobody will read.
func (b *respBody) discard() { drainClose(b) }

func drainClose(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, maxDrain)
	_ = rc.Close()
}

// upgradedBody is a 101 response's connection: ReverseProxy needs it
// writable to splice a WebSocket.
type upgradedBody struct{ *respBody }

func (u *upgradedBody) Write(p []byte) (int, error) {
	return u.rc.(io.Writer).Write(p)
}

// onceBody hands a body too large to replay to one attempt, noting whether
// any of it was read. Close is left to the server, which owns the body.
type onceBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (o *onceBody) Read(p []byte) (int, error) {
	o.read.Store(true)
	return o.rc.Read(p)
}

func (o *onceBody) Close() error { return nil }

type errBody struct{ err error }

func (e errBody) Read([]byte) (int, error) { return 0, e.err }
func (e errBody) Close() error             { return nil }
