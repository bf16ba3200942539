package transport

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// upstream is a raw loopback server: each accepted connection goes to
// handle, which writes whatever bytes the test wants.
type upstream struct {
	ln       net.Listener
	url      string
	accepted atomic.Int32
	closed   chan int // serve: the index of each connection whose client went away
	// countGone (serve) says how many clients went away.
	countGone func() int32
	wg        sync.WaitGroup
}

// serveRaw starts an upstream whose handle owns each connection (index
// from 1). The connection is closed when handle returns.
func serveRaw(t testing.TB, handle func(nc net.Conn, br *bufio.Reader, id int)) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, url: "http://" + ln.Addr().String()}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			id := int(u.accepted.Add(1))
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer nc.Close()
				handle(nc, bufio.NewReader(nc), id)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

// serve starts an upstream that reads requests one after another (bodies
// drained) and answers each with respond(conn id, request number from 1,
// request); an answer "" closes the connection without a word. When the
// client goes away, the connection's id is sent on u.closed.
func serve(t testing.TB, respond func(id, n int, req *http.Request) string) *upstream {
	closed := make(chan int, 1000)
	var gone atomic.Int32
	u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				gone.Add(1)
				select {
				case closed <- id:
				default:
				}
				return
			}
			io.Copy(io.Discard, req.Body)
			out := respond(id, n, req)
			if out == "" {
				return
			}
			if _, err := io.WriteString(nc, out); err != nil {
				return
			}
		}
	})
	u.closed = closed
	u.countGone = gone.Load
	return u
}

// ok is a keep-alive answer with body s.
func ok(s string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(s)) + "\r\n\r\n" + s
}

// fetch sends one request through rt and reads the whole body.
func fetch(t testing.TB, rt http.RoundTripper, req *http.Request) (*http.Response, string, error) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func newReq(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// get fetches url through rt, the transport under test, and fails the
// test on any error.
func get(t testing.TB, rt http.RoundTripper, url string) (*http.Response, string) {
	t.Helper()
	return testkit.Get(t, &http.Client{Transport: rt}, url)
}

// waitClosed waits (generously) for the upstream to see connection id go.
func waitClosed(t testing.TB, u *upstream, id int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-u.closed:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("connection %d still open", id)
		}
	}
}

// idle counts the idle connections over all of t's pools.
func (t *H1) idle() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pools {
		n += p.idleCount()
	}
	return n
}

// open counts the connections the pools hold (dialing, busy and idle).
func (t *H1) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pools {
		p.mu.Lock()
		n += p.open
		p.mu.Unlock()
	}
	return n
}

// idleCount is how many connections wait in p's idle list.
func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
