package transport

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

func newStandard() *Standard {
	return WrapStandard(&http.Transport{
		Proxy:              nil,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // httptest's certificate
		ForceAttemptHTTP2:  true,
	})
}

// Issue 19, defect 9: net/http's Transport drops the whole Connection
// header when it says close, and with it the names beside close; Standard
// reads them from the raw bytes, on http and https, on new and reused
// connections, past interim 1xx responses and never from a body.
func TestStandardStripsNominatedHeaders(t *testing.T) {
	answer := func(path string) string {
		conn := strings.ReplaceAll(strings.TrimPrefix(path, "/"), "_", ", ")
		var interim string
		if strings.Contains(conn, "interim") {
			conn = strings.ReplaceAll(conn, "interim", "X-Interim")
			interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
		}
		// The body looks like a header block naming X-Kept: only a
		// scanner that reads bodies would remove X-Kept from the next
		// answer on this connection.
		body := "\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close, X-Kept\r\n\r\n"
		return interim + "HTTP/1.1 200 OK\r\nConnection: " + conn + "\r\nX-Secret-Hop: 1\r\nX-Interim: 1\r\nX-Kept: yes\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	plain := serve(t, func(_, _ int, req *http.Request) string { return answer(req.URL.Path) })
	secure := testkit.RawTLSUpstream(t, func(req *http.Request) string { return answer(req.URL.Path) }).URL
	for name, url := range map[string]string{"http": plain.url, "https": secure} {
		t.Run(name, func(t *testing.T) {
			tr := newStandard()
			defer tr.CloseIdleConnections()
			cases := []struct{ connection, gone string }{
				{"X-Secret-Hop", "X-Secret-Hop"},
				{"keep-alive, X-Secret-Hop", "X-Secret-Hop"},
				{"interim, X-Secret-Hop", "X-Secret-Hop X-Interim"},
				{"close, X-Secret-Hop", "X-Secret-Hop"},
				{"X-Secret-Hop, close", "X-Secret-Hop"},
				{"X-Secret-Hop", "X-Secret-Hop"},
			}
			for _, tc := range cases {
				resp, _ := get(t, tr, url+"/"+strings.ReplaceAll(tc.connection, ", ", "_"))
				for _, h := range strings.Fields(tc.gone) {
					if v := resp.Header.Get(h); v != "" {
						t.Errorf("Connection: %s: %s reached the caller", tc.connection, h)
					}
				}
				if resp.Header.Get("X-Kept") != "yes" {
					t.Errorf("Connection: %s: X-Kept was removed", tc.connection)
				}
				if resp.ProtoMajor != 1 {
					t.Errorf("HTTP/%d", resp.ProtoMajor)
				}
			}
		})
	}
}

// h2 stays h2, with SNI as net/http sends it: Standard's own TLS dial
// hands a connection that negotiated h2 over as it is.
func TestStandardKeepsHTTP2(t *testing.T) {
	sni := make(chan string, 1)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni <- r.TLS.ServerName
		_, _ = io.WriteString(w, "ok")
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	tr := newStandard()
	defer tr.CloseIdleConnections()
	resp, body := get(t, tr, strings.Replace(up.URL, "127.0.0.1", "localhost", 1))
	if resp.ProtoMajor != 2 || body != "ok" {
		t.Errorf("HTTP/%d %q, want h2 and the body", resp.ProtoMajor, body)
	}
	if got := <-sni; got != "localhost" {
		t.Errorf("SNI %q, want localhost", got)
	}
}

// A 101's Connection names Upgrade, which the upgrade needs; other names
// go.
func TestStandardKeepsUpgradeOnA101(t *testing.T) {
	u := serveRaw(t, func(nc net.Conn, br *bufio.Reader, _ int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Secret-Hop\r\nUpgrade: websocket\r\nX-Secret-Hop: 1\r\n\r\n")
	})
	tr := newStandard()
	defer tr.CloseIdleConnections()
	req := newReq(t, "GET", u.url, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("X-Secret-Hop") != "" {
		t.Errorf("%d Upgrade %q X-Secret-Hop %q, want 101 websocket and no X-Secret-Hop", resp.StatusCode, resp.Header.Get("Upgrade"), resp.Header.Get("X-Secret-Hop"))
	}
}
