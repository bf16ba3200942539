package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Keep-alive: one connection carries every response that ends cleanly,
// bodies or none.
func TestKeepAliveReuse(t *testing.T) {
	u := serve(t, func(_, n int, req *http.Request) string {
		switch req.URL.Path {
		case "/head":
			return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" // HEAD: no body follows
		case "/204":
			return "HTTP/1.1 204 No Content\r\n\r\n"
		case "/304":
			return "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
		case "/empty":
			return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		}
		return ok("hello")
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	for range 3 {
		if _, body := get(t, tr, u.url+"/"); body != "hello" {
			t.Fatalf("body %q", body)
		}
	}
	resp, body, err := fetch(t, tr, newReq(t, "HEAD", u.url+"/head", nil))
	if err != nil || body != "" || resp.ContentLength != 100 {
		t.Fatalf("HEAD: %v %q %d", err, body, resp.ContentLength)
	}
	for _, path := range []string{"/204", "/304", "/empty"} {
		if _, body := get(t, tr, u.url+path); body != "" {
			t.Fatalf("%s: body %q", path, body)
		}
	}
	resp, body = get(t, tr, u.url+"/chunked")
	if body != "abcde" || resp.Trailer.Get("X-Trailer") != "t" {
		t.Fatalf("chunked: %q, trailer %v", body, resp.Trailer)
	}
	get(t, tr, u.url+"/")
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	if tr.idle() != 1 {
		t.Fatalf("%d idle connections, want 1", tr.idle())
	}
}

// A body that ends with the connection (no length, no chunking), and an
// HTTP/1.0 answer, are read whole, and their connection is not reused.
func TestCloseDelimitedBodies(t *testing.T) {
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\n\r\nuntil the end",
		"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nuntil th",
	} {
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, _ int) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(nc, answer)
			if strings.HasPrefix(answer, "HTTP/1.0") {
				io.WriteString(nc, "e en") // a second write, then the close
			}
		})
		tr := NewH1(Settings{})
		resp, body := get(t, tr, u.url)
		if body != "until the end"[:len(body)] || len(body) < 12 || !resp.Close {
			t.Fatalf("%q: body %q, close=%v", answer, body, resp.Close)
		}
		if tr.idle() != 0 || tr.open() != 0 {
			t.Fatalf("%q: %d idle, %d open after a close-delimited body", answer, tr.idle(), tr.open())
		}
	}
}

// max_conns: never more connections than allowed, however many requests
// wait; the waiters get the connections that free up.
func TestMaxConnsUnderConcurrency(t *testing.T) {
	release := make(chan struct{})
	var inFlight, most atomic.Int32
	u := serve(t, func(_, _ int, _ *http.Request) string {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		inFlight.Add(-1)
		return ok("x")
	})
	tr := NewH1(Settings{MaxConns: 2, MaxIdleConns: 8})
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := fetch(t, tr, newReq(t, "GET", u.url, nil)); err != nil {
				errs <- err
			}
		}()
	}
	// Wait until the cap is reached, then let everything through.
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := u.accepted.Load(); n > 2 {
		t.Errorf("%d connections with max_conns 2", n)
	}
	if m := most.Load(); m > 2 {
		t.Errorf("%d requests at once with max_conns 2", m)
	}
	if tr.open() > 2 {
		t.Errorf("the pool counts %d connections", tr.open())
	}
}

// A request waiting for a slot gives up with its context, and leaves no
// trace in the pool.
func TestMaxConnsWaitEndsWithContext(t *testing.T) {
	release := make(chan struct{})
	u := serve(t, func(_, n int, _ *http.Request) string {
		if n == 1 {
			<-release
		}
		return ok("x")
	})
	tr := NewH1(Settings{MaxConns: 1})
	defer tr.CloseIdleConnections()
	first := make(chan error, 1)
	go func() {
		_, _, err := fetch(t, tr, newReq(t, "GET", u.url, nil))
		first <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); tr.open() < 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := newReq(t, "GET", u.url, nil).WithContext(ctx)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting request: %v, want the context's deadline", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	get(t, tr, u.url)
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// idle_conn_timeout: an idle connection is closed by the pool's timer,
// with no request to notice it.
func TestIdleTimeoutEvicts(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string { return ok("x") })
	tr := NewH1(Settings{IdleConnTimeout: 50 * time.Millisecond})
	defer tr.CloseIdleConnections()
	get(t, tr, u.url)
	waitClosed(t, u, 1)
	if tr.idle() != 0 || tr.open() != 0 {
		t.Fatalf("%d idle, %d open after the idle timeout", tr.idle(), tr.open())
	}
	get(t, tr, u.url)
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// max_idle_conns: what does not fit in the idle list is closed.
func TestMaxIdleConns(t *testing.T) {
	release := make(chan struct{})
	var inFlight atomic.Int32
	u := serve(t, func(_, _ int, _ *http.Request) string {
		inFlight.Add(1)
		<-release
		return ok("x")
	})
	tr := NewH1(Settings{MaxIdleConns: 1})
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := fetch(t, tr, newReq(t, "GET", u.url, nil)); err != nil {
				t.Error(err)
			}
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if tr.idle() != 1 || tr.open() != 1 {
		t.Fatalf("%d idle, %d open; want 1 and 1", tr.idle(), tr.open())
	}
	tr.CloseIdleConnections()
	if tr.idle() != 0 || tr.open() != 0 {
		t.Fatalf("%d idle, %d open after CloseIdleConnections", tr.idle(), tr.open())
	}
}

// A refused dial comes back as net's dial error (the retry policy knows
// such a request was never sent), and frees its slot for the next waiter.
func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	tr := NewH1(Settings{MaxConns: 1, ConnectTimeout: 5 * time.Second})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := tr.RoundTrip(newReq(t, "GET", dead, nil))
			errs <- err
		}()
	}
	for range 4 {
		var op *net.OpError
		if err := <-errs; !errors.As(err, &op) || op.Op != "dial" {
			t.Fatalf("err = %v, want a dial *net.OpError", err)
		}
	}
	if tr.open() != 0 {
		t.Fatalf("%d connections counted after failed dials", tr.open())
	}
}

func TestDialAddr(t *testing.T) {
	for host, want := range map[string]string{
		"example.com":      "example.com:80",
		"example.com:8080": "example.com:8080",
		"[::1]":            "[::1]:80",
		"[::1]:81":         "[::1]:81",
		"127.0.0.1":        "127.0.0.1:80",
		"example.com:":     "example.com:80",
	} {
		if got := dialAddr(host); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", host, got, want)
		}
	}
}

// Slots are never lost or doubled when waiters give up while connections
// are handed over: after a storm of requests, many cancelled, the pool
// counts exactly its idle connections and still serves.
func TestPoolAccountingUnderCancellation(t *testing.T) {
	u := serve(t, func(_, n int, _ *http.Request) string {
		if n%3 == 0 {
			time.Sleep(time.Millisecond)
		}
		return ok("x")
	})
	tr := NewH1(Settings{MaxConns: 2, MaxIdleConns: 2})
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration((g+i)%4)*time.Millisecond)
				resp, err := tr.RoundTrip(newReq(t, "GET", u.url, nil).WithContext(ctx))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				cancel()
				if n := tr.open(); n > 2 {
					t.Errorf("%d connections counted with max_conns 2", n)
				}
			}
		}()
	}
	wg.Wait()
	if tr.open() != tr.idle() {
		t.Fatalf("%d connections counted, %d idle, none busy", tr.open(), tr.idle())
	}
	get(t, tr, u.url)
	// Every socket the pool let go is closed: the upstream sees them go.
	open := func() int32 { return u.accepted.Load() - u.countGone() }
	for deadline := time.Now().Add(10 * time.Second); open() > 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := open(); n > 2 {
		t.Fatalf("%d upstream connections open", n)
	}
}
