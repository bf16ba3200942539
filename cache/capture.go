package cache

import (
	"io"
	"sync"
)

// Capture tees a response body while it streams to the client. Reads
// pass through unchanged, with the same sizes and errors and no waiting;
// the bytes read are also copied into a buffer.
//
// When body reports a clean io.EOF and the buffer is whole, done is called
// once with the whole body (never nil; empty for an empty body), from
// inside the Read that saw EOF: before the caller gets its last bytes, so
// done should be quick (store the entry, release waiters). The slice is
// done's to keep.
//
// The capture is abandoned, its buffer released and abandon called once
// (unless nil) when the body grows past max bytes, when a Read fails with
// any other error (an upstream reset shows up as io.ErrUnexpectedEOF), or
// when the body is closed before EOF (client gone). Streaming continues
// regardless: a body over max still reaches the client whole. done is then
// never called, so a truncated body is never cached. Exactly one of done and
// abandon runs once the body has been read to its end or closed.
//
// max of 0 or less means no limit; the whole body is then held in memory,
// so callers should always pass one. body must not be nil; done may be.
//
// Read and Close may be called from different goroutines, as Close is used
// to interrupt a blocked Read.
func Capture(body io.ReadCloser, max int64, done func(body []byte), abandon func()) io.ReadCloser {
	return &capture{body: body, max: max, done: done, abandon: abandon}
}

type captureState int

const (
	capturing captureState = iota
	captured               // done was called
	abandoned              // abandon was called (or would have been, if nil)
)

type capture struct {
	body    io.ReadCloser
	max     int64
	done    func([]byte)
	abandon func()

	// mu guards state and buf, and is never held across body.Read or
	// body.Close: a Close must be able to interrupt a Read blocked on a
	// stalled upstream. The callbacks run outside it too, so that they may
	// do anything, even Close this body.
	mu    sync.Mutex
	state captureState
	buf   []byte
}

func (c *capture) Read(p []byte) (int, error) {
	n, err := c.body.Read(p)
	c.mu.Lock()
	if c.state != capturing {
		c.mu.Unlock()
		return n, err
	}
	var notify func()
	if c.max > 0 && int64(len(c.buf))+int64(n) > c.max {
		notify = c.giveUp()
	} else {
		c.buf = append(c.buf, p[:n]...)
		switch err {
		case nil:
		case io.EOF:
			c.state = captured
			body := compact(c.buf)
			c.buf = nil
			if c.done != nil {
				notify = func() { c.done(body) }
			}
		default:
			notify = c.giveUp()
		}
	}
	c.mu.Unlock()
	if notify != nil {
		notify()
	}
	return n, err
}

func (c *capture) Close() error {
	c.mu.Lock()
	var notify func()
	if c.state == capturing {
		notify = c.giveUp()
	}
	c.mu.Unlock()
	if notify != nil {
		notify()
	}
	return c.body.Close()
}

// giveUp abandons the capture and returns the callback to run once c.mu is
// released; c.mu must be held.
func (c *capture) giveUp() func() {
	c.state = abandoned
	c.buf = nil
	if c.abandon == nil {
		return nil
	}
	return c.abandon
}

// compact returns buf, or a copy without its spare capacity when that is
// large. append doubles the buffer, and an entry is charged for len(Body),
// so keeping up to twice that alive would make the store's byte bound a
// lie. The copy happens once per fill, never on a hit.
func compact(buf []byte) []byte {
	if buf == nil {
		return []byte{}
	}
	if cap(buf)-len(buf) <= len(buf)/8 {
		return buf
	}
	return append(make([]byte, 0, len(buf)), buf...)
}
