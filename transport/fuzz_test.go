package transport

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"testing"
	"time"
)

// FuzzH1Response feeds arbitrary upstream bytes to H1 over a real socket.
// Whatever comes back, H1 must not panic, must finish well before the
// request's deadline (the upstream sends its bytes and half-closes), and
// must never keep a connection after an error.
//
//	go test -run='^$' -fuzz=FuzzH1Response -fuzztime=60s ./upstream/
func FuzzH1Response(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, X-Secret-Hop\r\nX-Secret-Hop: s\r\n\r\nbody",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\nConnection: x\n y\n\nHTTP/1.1 200 OK\r\n\r\n",
	} {
		f.Add([]byte(seed), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), true)

	payloads := make(chan []byte, 1)
	u := serveRaw(f, func(nc net.Conn, br *bufio.Reader, _ int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		nc.Write(<-payloads)
		nc.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	})

	f.Fuzz(func(t *testing.T, answer []byte, head bool) {
		select {
		case <-payloads: // left by an iteration whose request never arrived
		default:
		}
		payloads <- answer
		tr := NewH1(Settings{MaxResponseHeaderBytes: 4096})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil },
		})
		method := "GET"
		if head {
			method = "HEAD"
		}
		req, _ := http.NewRequestWithContext(ctx, method, u.url, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 100 || resp.StatusCode > 999 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		if ctx.Err() != nil {
			t.Fatal("hung until the deadline")
		}
		if err != nil && (tr.idle() != 0 || tr.open() != 0) {
			t.Fatalf("after %v: %d idle, %d open", err, tr.idle(), tr.open())
		}
		if tr.open() > 1 {
			t.Fatalf("%d connections for one request", tr.open())
		}
		tr.CloseIdleConnections()
	})
}
