package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

func TestResponseHeaderTimeout(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	u := serve(t, func(_, _ int, _ *http.Request) string {
		<-stall
		return ""
	})
	tr := NewH1(Settings{ResponseHeaderTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := tr.RoundTrip(newReq(t, "GET", u.url, nil))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "no response header") {
		t.Fatalf("err = %v, want a response header timeout", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("the timeout did not end the wait")
	}
	if u.accepted.Load() != 1 || tr.open() != 0 {
		t.Fatalf("%d connections, %d open: a timeout is not retried and closes its connection", u.accepted.Load(), tr.open())
	}
}

// Cancelling the request closes the connection, while waiting for the
// header and while the body streams.
func TestCancelClosesConnection(t *testing.T) {
	t.Run("before the header", func(t *testing.T) {
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
			http.ReadRequest(br)
			io.Copy(io.Discard, br) // until the client goes
		})
		tr := NewH1(Settings{})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := tr.RoundTrip(newReq(t, "GET", u.url, nil).WithContext(ctx))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if tr.open() != 0 {
			t.Fatal("the cancelled request's connection is still counted")
		}
	})
	t.Run("mid-body", func(t *testing.T) {
		gone := make(chan struct{})
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
			http.ReadRequest(br)
			io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst")
			io.Copy(io.Discard, br)
			close(gone)
		})
		tr := NewH1(Settings{})
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := tr.RoundTrip(newReq(t, "GET", u.url, nil).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
			t.Fatalf("%q %v", buf, err)
		}
		cancel()
		if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
			t.Fatalf("read after cancel: %v, want context.Canceled", err)
		}
		resp.Body.Close()
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream connection stayed open after the cancel")
		}
		if tr.open() != 0 {
			t.Fatal("the cancelled connection is still counted")
		}
	})
	t.Run("blocked read ends with the cancel", func(t *testing.T) {
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
			http.ReadRequest(br)
			io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			io.Copy(io.Discard, br)
		})
		tr := NewH1(Settings{})
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := tr.RoundTrip(newReq(t, "GET", u.url, nil).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
			t.Fatalf("read: %v, want context.Canceled", err)
		}
	})
}

// Closing a body before its end closes the connection, unless the rest
// had already arrived.
func TestEarlyBodyClose(t *testing.T) {
	u := serve(t, func(_, _ int, req *http.Request) string {
		if req.URL.Path == "/big" {
			return "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nonly the start"
		}
		return ok("small and whole")
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(newReq(t, "GET", u.url+"/small", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // unread, but all buffered: the connection is kept
	if tr.idle() != 1 {
		t.Fatal("a fully received body closed unread did not give its connection back")
	}
	resp, err = tr.RoundTrip(newReq(t, "GET", u.url+"/big", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tr.idle() != 0 || tr.open() != 0 {
		t.Fatal("a body closed early kept its connection")
	}
	waitClosed(t, u, 1)
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

// A reused connection that the upstream closes as the request arrives:
// the request is sent again on a new connection only under net/http's
// rule, and never twice.
func TestRetryOnReusedConnection(t *testing.T) {
	cases := []struct {
		name      string
		req       func(url string) *http.Request
		reset     bool // the upstream resets instead of closing
		wantRetry bool
	}{
		{"GET", func(url string) *http.Request { return newReq(t, "GET", url, nil) }, false, true},
		{"GET, reset", func(url string) *http.Request { return newReq(t, "GET", url, nil) }, true, true},
		{"PUT with GetBody and Idempotency-Key", func(url string) *http.Request {
			r := newReq(t, "PUT", url, strings.NewReader("body"))
			r.Header.Set("Idempotency-Key", "k1")
			return r
		}, false, true},
		{"POST with GetBody", func(url string) *http.Request {
			return newReq(t, "POST", url, strings.NewReader("body"))
		}, false, false},
		{"GET with a streaming body", func(url string) *http.Request {
			r := newReq(t, "GET", url, io.NopCloser(strings.NewReader("body")))
			r.ContentLength = 4
			return r
		}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 10)
			u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
				for n := 1; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(req.Body)
					got <- req.Method + " " + string(b)
					if id == 1 && n == 2 {
						if tc.reset {
							nc.(*net.TCPConn).SetLinger(0)
						}
						return // closes without a word
					}
					io.WriteString(nc, ok("fine"))
				}
			})
			tr := NewH1(Settings{})
			defer tr.CloseIdleConnections()
			get(t, tr, u.url)
			<-got
			_, body, err := fetch(t, tr, tc.req(u.url))
			if tc.wantRetry {
				if err != nil || body != "fine" {
					t.Fatalf("%q %v, want a transparent retry", body, err)
				}
				first, again := <-got, <-got
				if first != again {
					t.Fatalf("the retry sent %q, the first try %q", again, first)
				}
			} else if err == nil {
				t.Fatalf("got %q: a request that cannot be replayed was sent again", body)
			}
			want := int32(1)
			if tc.wantRetry {
				want = 2
			}
			if n := u.accepted.Load(); n != want {
				t.Fatalf("%d connections, want %d", n, want)
			}
		})
	}
}

// A retry is never retried: a second failure is the answer.
func TestRetryOnlyOnce(t *testing.T) {
	u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if id == 1 {
			io.WriteString(nc, ok("first"))
			http.ReadRequest(br)
		}
		// every later connection closes without answering
	})
	tr := NewH1(Settings{})
	get(t, tr, u.url)
	if _, err := tr.RoundTrip(newReq(t, "GET", u.url, nil)); err == nil {
		t.Fatal("no error")
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (one try, one retry)", n)
	}
}

// A fresh connection that fails before the response is not retried: the
// upstream may simply refuse this request.
func TestNoRetryOnFreshConnection(t *testing.T) {
	u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) { http.ReadRequest(br) })
	tr := NewH1(Settings{})
	if _, err := tr.RoundTrip(newReq(t, "GET", u.url, nil)); err == nil {
		t.Fatal("no error")
	}
	if n := u.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// Bytes after a response that nobody asked for must never become the
// next request's response.
func TestUnsolicitedBytesNeverAnswerTheNextRequest(t *testing.T) {
	u := serve(t, func(id, n int, _ *http.Request) string {
		if id == 1 {
			return ok("real") + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged"
		}
		return ok("second")
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	if _, body := get(t, tr, u.url); body != "real" {
		t.Fatalf("body %q", body)
	}
	if _, body := get(t, tr, u.url); body != "second" {
		t.Fatalf("second answer %q, want %q", body, "second")
	}
}

func TestMalformedResponses(t *testing.T) {
	cases := []struct {
		name, answer string
		bodyErr      bool // the header parses; the body read fails
	}{
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", true},
		{"chunk longer than said", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n", true},
		{"differing Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", false},
		{"status not a number", "HTTP/1.1 2x0 OK\r\n\r\n", false},
		{"status below 100", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", false},
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n\r\n", false},
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", false},
		{"oversize header", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\nContent-Length: 0\r\n\r\n", false},
		{"cut inside the header", "HTTP/1.1 200 OK\r\nContent-Le", false},
		{"body shorter than its length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, _ int) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(nc, tc.answer)
				nc.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, br)
			})
			tr := NewH1(Settings{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, body, err := fetch(t, tr, newReq(t, "GET", u.url, nil).WithContext(ctx))
			switch {
			case err == nil:
				t.Fatalf("no error (status %d, body %q)", resp.StatusCode, body)
			case tc.bodyErr != (resp != nil):
				t.Fatalf("error %v at the wrong stage (response %v)", err, resp != nil)
			case ctx.Err() != nil:
				t.Fatal("hung until the deadline")
			}
			if tr.idle() != 0 || tr.open() != 0 {
				t.Fatalf("%d idle, %d open after %v", tr.idle(), tr.open(), err)
			}
		})
	}
}

func TestMaxResponseHeaderBytes(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string {
		return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2000) + "\r\nContent-Length: 0\r\n\r\n"
	})
	if _, err := NewH1(Settings{MaxResponseHeaderBytes: 1024}).RoundTrip(newReq(t, "GET", u.url, nil)); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err = %v, want errHeaderTooLarge", err)
	}
	if _, err := NewH1(Settings{MaxResponseHeaderBytes: 4096}).RoundTrip(newReq(t, "GET", u.url, nil)); err != nil {
		t.Fatal(err)
	}
}

// Interim responses reach the trace (ReverseProxy relays them) and are
// bounded in number.
func TestInterimResponses(t *testing.T) {
	hint := "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n"
	u := serve(t, func(_, _ int, req *http.Request) string {
		if req.URL.Path == "/flood" {
			return strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 11) + ok("late")
		}
		return strings.Repeat(hint, 3) + ok("final")
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	var codes []int
	var links []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		codes = append(codes, code)
		links = append(links, h.Get("Link"))
		if h.Get("X-Hop") != "" {
			t.Error("a header named in a 1xx's Connection was passed on")
		}
		return nil
	}}
	req := newReq(t, "GET", u.url, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, body, err := fetch(t, tr, req)
	if err != nil || body != "final" || resp.StatusCode != 200 {
		t.Fatalf("%v %q", err, body)
	}
	if len(codes) != 3 || codes[0] != 103 || links[2] != "</style.css>; rel=preload" {
		t.Fatalf("interim responses %v %q", codes, links)
	}
	if _, err := tr.RoundTrip(newReq(t, "GET", u.url+"/flood", nil)); err == nil || !strings.Contains(err.Error(), "interim") {
		t.Fatalf("a 1xx flood: %v", err)
	}
}

// An upstream may answer before it has read the whole body (a 413, then
// close): the answer is the response, and its connection is not reused.
func TestResponseBeforeTheBodyWasRead(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 8<<20)
	t.Run("upstream drains, then closes", func(t *testing.T) {
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, _ int) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
			io.Copy(io.Discard, br)
		})
		tr := NewH1(Settings{})
		resp, body, err := fetch(t, tr, newReq(t, "POST", u.url, bytes.NewReader(big)))
		if err != nil || resp.StatusCode != 413 || body != "too big!" {
			t.Fatalf("%v %q", err, body)
		}
		if tr.open() != 0 {
			t.Fatal("the connection was kept")
		}
	})
	t.Run("upstream closes at once", func(t *testing.T) {
		u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, _ int) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(nc, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big!")
		})
		tr := NewH1(Settings{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, _, err := fetch(t, tr, newReq(t, "POST", u.url, bytes.NewReader(big)).WithContext(ctx))
		// Whether the 413 survives the reset is the kernel's business;
		// either answer is fine, hanging is not.
		if ctx.Err() != nil {
			t.Fatal("hung")
		}
		if err == nil && resp.StatusCode != 413 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if tr.open() != 0 {
			t.Fatal("the connection was kept")
		}
		t.Logf("413 then close: err=%v", err)
	})
}

// A request body that fails (the client's upload broke) ends the request
// with that error, and the half-sent connection is closed.
func TestRequestBodyError(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string { return ok("x") })
	tr := NewH1(Settings{})
	broken := errors.New("client went away")
	r := newReq(t, "PUT", u.url, io.MultiReader(strings.NewReader("part"), errReader{broken}))
	r.ContentLength = 100
	if _, err := tr.RoundTrip(r); !errors.Is(err, broken) {
		t.Fatalf("err = %v, want the body's error", err)
	}
	if tr.open() != 0 {
		t.Fatal("the half-sent connection was kept")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// ReverseProxy suppresses Go's User-Agent with an empty value; the lean
// path must not add one either, nor any header ReverseProxy did not set.
func TestWritesOnlyTheRequestHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	u := serve(t, func(_, _ int, req *http.Request) string {
		got <- req.Header
		return ok("x")
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	req := newReq(t, "GET", u.url, nil)
	req.Header["User-Agent"] = []string{""}
	req.Header.Set("X-Request-Id", "abc")
	get(t, tr, u.url) // a request with no User-Agent set gets Go's, as from http.Transport
	<-got
	if _, _, err := fetch(t, tr, req); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if _, ok := h["User-Agent"]; ok || len(h) != 1 || h.Get("X-Request-Id") != "abc" {
		t.Fatalf("upstream saw %v", h)
	}
}
