package transport

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"
)

// pool holds the connections to one upstream address. Idle connections
// wait in a LIFO list (the warmest is reused first, the coldest ages out);
// one timer, armed only while something is idle, closes those idle past
// IdleConnTimeout. No goroutine runs per connection.
type pool struct {
	t    *H1
	key  string // req.URL.Host as the requests spell it
	addr string // host:port to dial

	mu      sync.Mutex
	idle    []*conn // oldest first
	open    int     // dialing, busy and idle
	waiters []chan *conn
	timer   *time.Timer
	armed   bool
}

// get returns a connection for one request: the most recently used idle
// one that is still sound, else a new one, else (at MaxConns) the first
// one freed, waiting within ctx. fresh skips idle connections (a retry
// must not land on another connection that may have gone stale).
func (p *pool) get(ctx context.Context, fresh bool) (*conn, error) {
	for {
		p.mu.Lock()
		if !fresh && len(p.idle) > 0 {
			c := p.idle[len(p.idle)-1]
			p.idle[len(p.idle)-1] = nil
			p.idle = p.idle[:len(p.idle)-1]
			p.mu.Unlock()
			if c.sound() {
				return c, nil
			}
			c.discard()
			continue
		}
		var evicted []net.Conn
		if max := p.t.s.MaxConns; max > 0 && p.open >= max && len(p.idle) > 0 {
			// A fresh connection is wanted and the cap is reached: an idle
			// one gives its slot up rather than make us wait for nothing.
			evicted = p.closeIdleLocked(1)
		}
		if max := p.t.s.MaxConns; max <= 0 || p.open < max {
			p.open++
			p.mu.Unlock()
			closeAll(evicted)
			return p.dial(ctx)
		}
		ch := make(chan *conn, 1)
		p.waiters = append(p.waiters, ch)
		p.mu.Unlock()
		select {
		case c := <-ch:
			if c == nil { // a slot, not a connection
				return p.dial(ctx)
			}
			if c.sound() {
				return c, nil
			}
			c.discard()
		case <-ctx.Done():
			p.stopWaiting(ch)
			return nil, context.Cause(ctx)
		}
	}
}

// dial opens a connection in a slot already counted in p.open.
func (p *pool) dial(ctx context.Context) (*conn, error) {
	nc, err := p.t.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		p.drop()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	return newConn(p, nc), nil
}

// put takes back a connection that finished a response cleanly: the first
// waiter gets it, else it joins the idle list.
func (p *pool) put(c *conn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if ch := p.firstWaiterLocked(); ch != nil {
		p.mu.Unlock()
		ch <- c
		return
	}
	var evict *conn
	switch max := p.t.s.maxIdle(); {
	case max == 0:
		evict = c
	case len(p.idle) >= max:
		evict = p.idle[0]
		copy(p.idle, p.idle[1:])
		p.idle[len(p.idle)-1] = c
	default:
		p.idle = append(p.idle, c)
	}
	if evict != nil {
		p.open--
	}
	p.armLocked()
	p.mu.Unlock()
	if evict != nil {
		evict.nc.Close()
	}
}

// drop gives back the slot of a connection that was closed (or never
// opened): the first waiter may dial in it.
func (p *pool) drop() {
	p.mu.Lock()
	if ch := p.firstWaiterLocked(); ch != nil {
		p.mu.Unlock()
		ch <- nil
		return
	}
	p.open--
	p.mu.Unlock()
}

// firstWaiterLocked dequeues the longest waiting request, if any; what is
// sent to it (under no lock: the channel has room) is now its own.
func (p *pool) firstWaiterLocked() chan *conn {
	if len(p.waiters) == 0 {
		return nil
	}
	ch := p.waiters[0]
	p.waiters = slices.Delete(p.waiters, 0, 1)
	return ch
}

// stopWaiting withdraws a waiter whose context ended; whatever was handed
// to it meanwhile is passed on.
func (p *pool) stopWaiting(ch chan *conn) {
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = slices.Delete(p.waiters, i, i+1)
			p.mu.Unlock()
			return
		}
	}
	p.mu.Unlock()
	if c := <-ch; c != nil {
		p.put(c)
	} else {
		p.drop()
	}
}

// armLocked starts the idle timer for the oldest idle connection.
func (p *pool) armLocked() {
	timeout := p.t.s.IdleConnTimeout
	if p.armed || timeout <= 0 || len(p.idle) == 0 {
		return
	}
	d := time.Until(p.idle[0].idleAt.Add(timeout))
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.sweep)
	} else {
		p.timer.Reset(d)
	}
	p.armed = true
}

// sweep closes the idle connections past IdleConnTimeout; being LIFO, the
// list keeps them at its front.
func (p *pool) sweep() {
	p.mu.Lock()
	p.armed = false
	deadline := time.Now().Add(-p.t.s.IdleConnTimeout)
	n := 0
	for n < len(p.idle) && !p.idle[n].idleAt.After(deadline) {
		n++
	}
	stale := p.closeIdleLocked(n)
	p.armLocked()
	p.mu.Unlock()
	closeAll(stale)
}

// closeIdle closes every idle connection.
func (p *pool) closeIdle() {
	p.mu.Lock()
	stale := p.closeIdleLocked(len(p.idle))
	p.mu.Unlock()
	closeAll(stale)
}

// closeIdleLocked removes the n oldest idle connections and returns them
// for closing outside the lock. Nobody waits while a connection is idle,
// so no slot needs handing over.
func (p *pool) closeIdleLocked(n int) []net.Conn {
	if n == 0 {
		return nil
	}
	stale := make([]net.Conn, n)
	for i, c := range p.idle[:n] {
		stale[i] = c.nc
	}
	rest := copy(p.idle, p.idle[n:])
	clear(p.idle[rest:])
	p.idle = p.idle[:rest]
	p.open -= n
	return stale
}

func closeAll(conns []net.Conn) {
	for _, nc := range conns {
		nc.Close()
	}
}
