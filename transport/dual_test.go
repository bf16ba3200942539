package transport

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

func TestPath(t *testing.T) {
	d := New(Settings{Scheme: "http"}, nil)
	req := func(method, url string, body io.Reader, edit func(*http.Request)) *http.Request {
		r := newReq(t, method, url, body)
		if edit != nil {
			edit(r)
		}
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		want string
	}{
		{"GET", req("GET", "http://u/", nil, nil), PathFast},
		{"POST with a length", req("POST", "http://u/", strings.NewReader("abc"), nil), PathFast},
		{"POST, NoBody", req("POST", "http://u/", http.NoBody, nil), PathFast},
		{"https", req("GET", "https://u/", nil, nil), PathStandard},
		{"WebSocket", req("GET", "http://u/", nil, func(r *http.Request) {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}), PathStandard},
		{"Upgrade header alone", req("GET", "http://u/", nil, func(r *http.Request) { r.Header.Set("Upgrade", "h2c") }), PathStandard},
		{"Connection: upgrade alone", req("GET", "http://u/", nil, func(r *http.Request) { r.Header.Set("Connection", "keep-alive, UPGRADE") }), PathStandard},
		{"100-continue", req("PUT", "http://u/", strings.NewReader("abc"), func(r *http.Request) { r.Header.Set("Expect", "100-Continue") }), PathStandard},
		{"unknown length", req("POST", "http://u/", io.NopCloser(strings.NewReader("abc")), func(r *http.Request) { r.ContentLength = -1 }), PathStandard},
		{"body, length 0", req("POST", "http://u/", io.NopCloser(strings.NewReader("abc")), func(r *http.Request) { r.ContentLength = 0 }), PathStandard},
		{"chunked", req("POST", "http://u/", strings.NewReader("abc"), func(r *http.Request) { r.TransferEncoding = []string{"chunked"} }), PathStandard},
		{"trailers", req("POST", "http://u/", strings.NewReader("abc"), func(r *http.Request) { r.Trailer = http.Header{"X-Sum": nil} }), PathStandard},
		{"CONNECT", req("CONNECT", "http://u/", nil, nil), PathStandard},
	}
	for _, tc := range cases {
		if got := d.Path(tc.req); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	if got := New(Settings{Scheme: "https"}, nil).Path(req("GET", "http://u/", nil, nil)); got != PathStandard {
		t.Errorf("an https upstream's transport chose %s", got)
	}
}

// countingTransport is the standard path in these tests.
type countingTransport struct {
	http.Transport
	n atomic.Int32
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.Transport.RoundTrip(r)
}

func TestDualSendsEachRequestOneWay(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string { return ok("hi") })
	std := &countingTransport{}
	d := New(Settings{}, std)
	defer d.CloseIdleConnections()
	if _, body := get(t, d, u.url); body != "hi" || std.n.Load() != 0 {
		t.Fatalf("GET: %q, standard used %d times", body, std.n.Load())
	}
	r := newReq(t, "PUT", u.url, strings.NewReader("abc"))
	r.Header.Set("Expect", "100-continue")
	if _, body, err := fetch(t, d, r); err != nil || body != "hi" || std.n.Load() != 1 {
		t.Fatalf("100-continue: %q %v, standard used %d times", body, err, std.n.Load())
	}
	if n := u.accepted.Load(); n != 2 {
		t.Fatalf("%d connections: one per path expected", n)
	}
	if _, err := New(Settings{}, nil).RoundTrip(r); err != errNoStandard {
		t.Fatalf("no standard transport: %v", err)
	}
}

// Through ReverseProxy: an upstream's 103 reaches the client, and the
// final response keeps no header the upstream called hop-by-hop.
func TestReverseProxyOverDual(t *testing.T) {
	u := serve(t, func(_, _ int, _ *http.Request) string {
		return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok"
	})
	target, _ := url.Parse(u.url)
	d := New(Settings{}, &http.Transport{})
	defer d.CloseIdleConnections()
	front := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: d,
	})
	defer front.Close()
	var hints []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL, nil)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" || resp.Header.Get("X-Hop") != "" || len(hints) != 1 || hints[0] != "</a.css>; rel=preload" {
		t.Fatalf("body %q, X-Hop %q, hints %q", b, resp.Header.Get("X-Hop"), hints)
	}
}
