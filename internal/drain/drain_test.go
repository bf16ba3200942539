package drain_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/drain"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/transport"
)

// hostile is an upstream written by hand: on /stall it sends a 503 that
// promises 100 bytes of body, sends 5 and then nothing, holding the
// connection open; on /big an endless body as fast as it goes; anything
// else a 10-byte 200, keeping the connection. It counts connections
// accepted and closed by the peer.
type hostile struct {
	url      string
	accepted atomic.Int64
	closed   chan time.Time // one per connection the peer closed
}

func newHostile(t *testing.T) *hostile {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostile{url: "http://" + ln.Addr().String(), closed: make(chan time.Time, 16)}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go h.serve(c)
		}
	}()
	return h
}

func (h *hostile) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			h.closed <- time.Now()
			return
		}
		switch req.URL.Path {
		case "/stall":
			_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nhello")
			// Wait for the peer to close: a read returns EOF then.
			_, _ = io.Copy(io.Discard, br)
			h.closed <- time.Now()
			return
		case "/big":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
			chunk := make([]byte, 32<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					h.closed <- time.Now()
					return
				}
			}
		default:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
		}
	}
}

// waitClosed waits for the peer to close a connection, and says when.
func (h *hostile) waitClosed(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-h.closed:
		return at
	case <-time.After(drain.MaxTime + 2*time.Second):
		t.Fatalf("the upstream's connection is still open %v after Discard", drain.MaxTime+2*time.Second)
		return time.Time{}
	}
}

// eachTransport runs test once on each transport breakwater sends
// attempts through, net/http's and the lean one, against a new hostile
// upstream, checking for leaked goroutines.
func eachTransport(t *testing.T, test func(t *testing.T, name string, h *hostile, rt http.RoundTripper)) {
	transports := map[string]func() http.RoundTripper{
		"net/http": func() http.RoundTripper { return &http.Transport{Proxy: nil, DisableCompression: true} },
		"lean":     func() http.RoundTripper { return transport.NewH1(transport.Settings{}) },
	}
	for name, newRT := range transports {
		t.Run(name, func(t *testing.T) {
			testkit.CheckLeaks(t)
			h := newHostile(t)
			rt := newRT()
			defer rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
			test(t, name, h, rt)
		})
	}
}

func get(t *testing.T, rt http.RoundTripper, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// settled waits until the goroutine count is back to before, and returns
// how long that took; it fails the test after within.
func settled(t *testing.T, before int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testkit.WaitFor(t, within, fmt.Sprintf("goroutines back to %d (now %d)", before, runtime.NumGoroutine()), func() bool {
		return runtime.NumGoroutine() <= before
	})
	return time.Since(start)
}

// A body that stalls: Discard returns at once, the Read blocked on the
// silent upstream ends when MaxTime closes the body, and the connection
// is closed (the upstream sees it go), not pooled with unread bytes.
func TestDiscardEndsAStalledBodyAndClosesItsConnection(t *testing.T) {
	eachTransport(t, func(t *testing.T, name string, h *hostile, rt http.RoundTripper) {
		before := runtime.NumGoroutine()
		resp := get(t, rt, h.url+"/stall")
		if resp.StatusCode != 503 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		start := time.Now()
		drain.Discard(resp.Body)
		if d := time.Since(start); d > drain.MaxTime/2 {
			t.Errorf("Discard blocked its caller for %v", d)
		}
		closedAfter := h.waitClosed(t).Sub(start)
		took := settled(t, before, drain.MaxTime+2*time.Second)
		t.Logf("%s: connection closed %v after Discard, goroutines settled %v later", name, closedAfter.Round(time.Millisecond), took.Round(time.Millisecond))
		if closedAfter < drain.MaxTime/2 {
			t.Errorf("connection closed after %v: the body was not given its %v", closedAfter, drain.MaxTime)
		}
		// The next request needs a connection of its own.
		resp = get(t, rt, h.url+"/short")
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n := h.accepted.Load(); n != 2 {
			t.Errorf("%d connections for two requests, want 2: the stalled one went back to the pool", n)
		}
	})
}

// A short body is read to its end, so its connection is used again; an
// endless one is read no further than MaxBytes, then closed.
func TestDiscardKeepsAShortBodysConnectionAndBoundsALongOne(t *testing.T) {
	eachTransport(t, func(t *testing.T, name string, h *hostile, rt http.RoundTripper) {
		short := &countingBody{ReadCloser: get(t, rt, h.url+"/short").Body}
		drain.Discard(short)
		testkit.WaitFor(t, 2*time.Second, "the drain to close the short body", func() bool { return short.closed.Load() })
		resp := get(t, rt, h.url+"/short")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "0123456789" || h.accepted.Load() != 1 {
			t.Errorf("second request: %q on %d connections, want the body on 1 connection", b, h.accepted.Load())
		}

		cr := &countingBody{ReadCloser: get(t, rt, h.url+"/big").Body}
		start := time.Now()
		drain.Discard(cr)
		h.waitClosed(t)
		testkit.WaitFor(t, 2*time.Second, "the drain to close the body", func() bool { return cr.closed.Load() })
		t.Logf("%s: endless body: %d bytes read, closed after %v", name, cr.n.Load(), time.Since(start).Round(time.Millisecond))
		if n := cr.n.Load(); n > drain.MaxBytes {
			t.Errorf("read %d bytes of a discarded body, want ≤ %d", n, drain.MaxBytes)
		}
	})
}

type countingBody struct {
	io.ReadCloser
	n      atomic.Int64
	closed atomic.Bool
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error {
	c.closed.Store(true)
	return c.ReadCloser.Close()
}
