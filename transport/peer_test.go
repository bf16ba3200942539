//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package transport

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// An upstream with a shorter keep-alive timeout closes an idle connection;
// a POST (which may not be sent twice) must not be sent on it. The pool
// notices the FIN when it picks the connection and dials instead.
func TestIdleConnectionClosedByUpstreamIsNotUsed(t *testing.T) {
	closed := make(chan struct{})
	u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, id int) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(nc, ok("first"))
		if id == 1 {
			nc.Close()
			close(closed)
			return
		}
	})
	tr := NewH1(Settings{})
	defer tr.CloseIdleConnections()
	get(t, tr, u.url)
	<-closed
	post := newReq(t, "POST", u.url, io.NopCloser(strings.NewReader("once")))
	post.ContentLength = 4
	if _, body, err := fetch(t, tr, post); err != nil || body != "first" {
		t.Fatalf("POST after the upstream closed the idle connection: %q %v", body, err)
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}
