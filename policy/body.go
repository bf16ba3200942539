package policy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/drain"
)

type readCloser = io.ReadCloser

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
	discarded bool // discard took it: Close tells st

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
		if b.discarded {
			b.st.drained()
		}
	})
	return err
}

// park frees the connection of a response that a retry is about to
// replace, without waiting for it: a goroutine reads the body, up to
// drain.MaxBytes, and when that is all of it, closes it, so the connection
// goes back to the pool while the retry waits and runs. The response stays
// whole in case it is the answer after all (the budget refuses the retry);
// reading it then waits for that goroutine, and goes on where it stopped.
// Close ends a read that is blocked on a stalled upstream, so a parked body
// that is discarded never waits for it (SPEC Part 3, "Every step under the
// route's clock").
func (b *respBody) park() {
	pk := &parked{rc: b.rc, done: make(chan struct{})}
	b.rc = pk
	go pk.fill(b.cancel)
}

// parked is a body being read ahead by park.
type parked struct {
	rc   io.ReadCloser
	done chan struct{} // closed when fill is over; r is set then
	r    io.Reader
}

func (p *parked) fill(release context.CancelFunc) {
	defer close(p.done)
	buf, err := io.ReadAll(io.LimitReader(p.rc, drain.MaxBytes+1))
	if err != nil || len(buf) > drain.MaxBytes {
		p.r = io.MultiReader(bytes.NewReader(buf), p.rc)
		return
	}
	_ = p.rc.Close()
	release()
	p.r = bytes.NewReader(buf)
}

func (p *parked) Read(b []byte) (int, error) {
	<-p.done
	return p.r.Read(b)
}

func (p *parked) Close() error { return p.rc.Close() }

// discard drains and closes a response nobody will read, in the
// background and bounded (drain.Discard): never waiting on the upstream.
func (b *respBody) discard() {
	b.discarded = true
	b.st.drains.Add(1)
	drain.Discard(b)
}

func (st *reqState) newBody() *respBody {
	if st.firstUsed.CompareAndSwap(false, true) {
		st.first.st = st
		return &st.first
	}
	return &respBody{st: st}
}

// replayable reports whether the request's body can be sent again.
func (st *reqState) replayable() bool {
	b := st.req.Body
	return b == nil || b == http.NoBody || st.req.GetBody != nil
}

// bodyForAttempt gives each attempt its own copy of a replayable body.
// A body too large to buffer goes to the first attempt through onceBody,
// which notes whether any of it was read: if not (a refused connection),
// it can still go to the next attempt.
func (st *reqState) bodyForAttempt() (body readCloser) {
	r := st.req
	if r.Body == nil || r.Body == http.NoBody {
		return r.Body
	}
	if r.GetBody != nil {
		if st.bodyTaken.CompareAndSwap(false, true) {
			return r.Body
		}
		b, err := r.GetBody()
		if err != nil {
			return errBody{err}
		}
		return b
	}
	if st.once == nil {
		st.once = &onceBody{rc: r.Body}
	}
	return st.once
}

// register remembers a response so that, whatever wins, every other one
// is drained and closed.
func (st *reqState) register(rb *respBody, resp *http.Response) {
	st.mu.Lock()
	if st.done {
		st.mu.Unlock()
		rb.discard()
		return
	}
	if st.bodies == nil {
		st.bodies = st.bodyBuf[:0]
	}
	st.bodies = append(st.bodies, rb)
	st.lastResp, st.lastErr = resp, nil
	st.mu.Unlock()
}

// discardAll drains and closes every response but the winner's.
func (st *reqState) discardAll(winner *http.Response) {
	st.mu.Lock()
	st.done = true
	bodies := st.bodies
	st.bodies = nil
	st.mu.Unlock()
	for _, rb := range bodies {
		if winner != nil && winner.Body == rb {
			if rb.hedge {
				st.p.obs.Hedge(st.p.route, "won")
			}
			continue
		}
		if rb.hedge {
			st.p.obs.Hedge(st.p.route, "lost")
		}
		rb.discard()
	}
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
