package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// rawUpstream answers every request on a plain listener with raw(path),
// byte for byte, and closes the connection.
func rawUpstream(t *testing.T, raw func(path string) string) string {
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
				if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					_, _ = io.WriteString(c, raw(r.URL.Path))
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// connectionCases are the Connection headers an upstream answers with, as
// a path ("_" for ", ").
var connectionCases = []string{"X-Secret-Hop", "close, X-Secret-Hop", "X-Secret-Hop, close", "keep-alive, X-Secret-Hop"}

func hopResponse(path string) string {
	conn := strings.ReplaceAll(strings.TrimPrefix(path, "/"), "_", ", ")
	return "HTTP/1.1 200 OK\r\nConnection: " + conn + "\r\nX-Secret-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok"
}

// Headers an upstream names in Connection are hop-by-hop and never reach
// the client, also when Connection says close as well (net/http's client
// drops the whole Connection header then, names included), on every
// transport: the lean one, net/http's on an http:// upstream (transport:
// standard) and on an https one (issue 19, defect 9).
func TestConnectionNamedResponseHeadersNeverReachTheClient(t *testing.T) {
	upstreams := map[string]string{
		"http":          `up: { url: "{{UP}}" }`,
		"http standard": `up: { url: "{{UP}}", transport: standard }`,
		"https":         `up: { url: "{{UP}}", tls: { insecure_skip_verify: true } }`,
	}
	for name, up := range upstreams {
		t.Run(name, func(t *testing.T) {
			var url string
			if name == "https" {
				url = testkit.RawTLSUpstream(t, func(r *http.Request) string { return hopResponse(r.URL.Path) }).URL
			} else {
				url = rawUpstream(t, hopResponse)
			}
			p := startProxy(t, "upstreams:\n  "+up+`
routes:
  - { name: r, match: { path_prefix: / }, upstream: up }
`, map[string]string{"UP": url})
			// Twice each: the second may come on a connection used before.
			for _, conn := range append(connectionCases, connectionCases...) {
				resp, body := p.get(t, "/"+strings.ReplaceAll(conn, ", ", "_"))
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
		})
	}
}

// And the other way: what the client names in Connection never reaches
// the upstream, on every transport.
func TestConnectionNamedRequestHeadersNeverReachTheUpstream(t *testing.T) {
	seen := make(chan http.Header, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = io.WriteString(w, "ok")
	})
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	tlsUp := httptest.NewTLSServer(h)
	t.Cleanup(tlsUp.Close)
	upstreams := map[string]string{
		"http":          `up: { url: "` + plain.URL + `" }`,
		"http standard": `up: { url: "` + plain.URL + `", transport: standard }`,
		"https":         `up: { url: "` + tlsUp.URL + `", tls: { insecure_skip_verify: true } }`,
	}
	for name, up := range upstreams {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, "upstreams:\n  "+up+`
routes:
  - { name: r, match: { path_prefix: / }, upstream: up }
`, nil)
			for _, conn := range []string{"X-Foo", "close, X-Foo", "X-Foo, keep-alive"} {
				req := newRequest(t, http.MethodGet, p.URL+"/x", nil)
				req.Header.Set("Connection", conn)
				req.Header.Set("X-Foo", "secret")
				req.Header.Set("X-Kept", "yes")
				resp, _ := do(t, p.Client(), req)
				if resp.StatusCode != 200 {
					t.Fatalf("Connection: %s: status %d", conn, resp.StatusCode)
				}
				got := <-seen
				if v := got.Values("X-Foo"); len(v) > 0 {
					t.Errorf("Connection: %s: the upstream saw X-Foo %q", conn, v)
				}
				if got.Get("X-Kept") != "yes" {
					t.Errorf("Connection: %s: an end-to-end header was lost", conn)
				}
			}
		})
	}
}
