package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// rawUpstream answers every request on a plain listener with resp, byte
// for byte, and closes the connection.
func rawUpstream(t *testing.T, resp string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					_, _ = io.WriteString(c, resp)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// Headers an upstream names in Connection are hop-by-hop and never reach
// the client, also when Connection says close as well (net/http's client
// drops the whole Connection header then, names included).
func TestConnectionNamedResponseHeadersNeverReachTheClient(t *testing.T) {
	testkit.SkipOnStandardTransport(t)
	for _, conn := range []string{"X-Secret-Hop", "close, X-Secret-Hop", "X-Secret-Hop, close"} {
		url := rawUpstream(t, "HTTP/1.1 200 OK\r\nConnection: "+conn+"\r\nX-Secret-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok")
		p := startProxy(t, testkit.OneRoute("{{UP}}", ""), map[string]string{"UP": url})
		resp, body := p.get(t, "/x")
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("Connection: %s: got %d %q", conn, resp.StatusCode, body)
		}
		if v := resp.Header.Get("X-Secret-Hop"); v != "" {
			t.Errorf("Connection: %s: X-Secret-Hop reached the client", conn)
		}
		if resp.Header.Get("X-Kept") != "2" {
			t.Errorf("Connection: %s: an end-to-end header was lost", conn)
		}
	}
}
