package transport

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// Issue #11, defect 8: "Connection: close, X-Secret-Hop" must not let
// X-Secret-Hop through. net/http's Transport drops the whole Connection
// header when it says close, so ReverseProxy never learns the other names.
func TestConnectionNominatedHeadersStripped(t *testing.T) {
	cases := []struct {
		name, connection string
		wantClose        bool
	}{
		{"beside close", "Connection: close, X-Secret-Hop\r\n", true},
		{"without close", "Connection: X-Secret-Hop\r\n", false},
		{"keep-alive and name", "Connection: keep-alive, x-secret-hop\r\n", false},
		{"two lines", "Connection: close\r\nConnection: X-Secret-Hop\r\n", true},
		{"upper case, close last", "CONNECTION: X-SECRET-HOP , CLOSE\r\n", true},
		{"folded line", "Connection: close,\r\n X-Secret-Hop\r\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := serve(t, func(_, _ int, _ *http.Request) string {
				return "HTTP/1.1 200 OK\r\n" + tc.connection +
					"X-Secret-Hop: s3cret\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
			})
			tr := NewH1(Settings{})
			defer tr.CloseIdleConnections()
			resp, body := get(t, tr, u.url)
			if got := resp.Header.Get("X-Secret-Hop"); got != "" {
				t.Errorf("X-Secret-Hop reached the caller: %q", got)
			}
			if resp.Header.Get("X-Kept") != "yes" || body != "ok" {
				t.Errorf("X-Kept %q, body %q", resp.Header.Get("X-Kept"), body)
			}
			if resp.Close != tc.wantClose {
				t.Errorf("resp.Close = %v, want %v", resp.Close, tc.wantClose)
			}
		})
	}
}

// The same through httputil.ReverseProxy, as breakwater runs it.
func TestReverseProxyDropsNominatedHeaderBesideClose(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string {
		return "HTTP/1.1 200 OK\r\nConnection: close, X-Secret-Hop\r\nX-Secret-Hop: s3cret\r\nContent-Length: 2\r\n\r\nok"
	})
	target, _ := url.Parse(u.url)
	tr := New(Settings{}, nil)
	defer tr.CloseIdleConnections()
	front := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
	})
	defer front.Close()
	resp, err := front.Client().Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Secret-Hop"); got != "" {
		t.Fatalf("X-Secret-Hop reached the client: %q", got)
	}
}

func TestConnectionTokens(t *testing.T) {
	cases := []struct {
		head      string
		names     string
		wantClose bool
	}{
		{"HTTP/1.1 200 OK\r\n\r\n", "", false},
		{"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", "", false},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "", true},
		{"HTTP/1.1 200 OK\r\nConnection:close,,a ,\tb\r\n\r\n", "a,b", true},
		{"HTTP/1.1 200 OK\nconnection: a\n\n", "a", false},
		{"HTTP/1.1 200 OK\r\nX-Connection: a\r\nConnectionX: b\r\n\r\n", "", false},
		{"HTTP/1.1 200 OK\r\nX: y\r\n c\r\nConnection: a\r\n\tb\r\nZ: 1\r\n d\r\n\r\n", "a,b", false},
		{"Connection: a\r\n\r\n", "", false}, // a status line is never a field
	}
	for _, tc := range cases {
		names, closing := connectionTokens([]byte(tc.head))
		if strings.Join(names, ",") != tc.names || closing != tc.wantClose {
			t.Errorf("%q: names %q close %v, want %q %v", tc.head, names, closing, tc.names, tc.wantClose)
		}
	}
}

func TestHeadEnd(t *testing.T) {
	cases := []struct {
		buf  string
		want int
	}{
		{"HTTP/1.1 200 OK\r\n\r\nbody", 19},
		{"HTTP/1.1 200 OK\n\nbody", 17},
		{"HTTP/1.1 200 OK\r\nA: b\r\n", -1},
		{"HTTP/1.1 200 OK\r\nA: b\r\n\r", -1},
		{"HTTP/1.1 200 OK\r\nA: b\r\n\n", 24},
	}
	for _, tc := range cases {
		if got := headEnd([]byte(tc.buf), 0); got != tc.want {
			t.Errorf("headEnd(%q) = %d, want %d", tc.buf, got, tc.want)
		}
	}
}
