package testkit

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Upstream is an httptest server that counts what reaches it: requests,
// requests in progress, and connections opened and closed.
type Upstream struct {
	*httptest.Server
	Hits        atomic.Int64 // requests received
	InFlight    atomic.Int64 // requests being handled now
	MaxInFlight atomic.Int64 // the most InFlight has been
	NewConns    atomic.Int64 // connections accepted
	ClosedConns atomic.Int64 // connections closed or hijacked
}

// NewUpstream starts an Upstream serving h, which gets the 1-based number
// of the request; it is closed when the test ends.
func NewUpstream(t testing.TB, h func(n int64, w http.ResponseWriter, r *http.Request)) *Upstream {
	t.Helper()
	u := NewUnstartedUpstream(h)
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// NewUnstartedUpstream is NewUpstream without the start, for a test that
// brings the upstream up later; the test starts it and closes it.
func NewUnstartedUpstream(h func(n int64, w http.ResponseWriter, r *http.Request)) *Upstream {
	u := &Upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.Hits.Add(1)
		in := u.InFlight.Add(1)
		defer u.InFlight.Add(-1)
		for m := u.MaxInFlight.Load(); in > m && !u.MaxInFlight.CompareAndSwap(m, in); m = u.MaxInFlight.Load() {
		}
		h(n, w, r)
	}))
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.NewConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.ClosedConns.Add(1)
		}
	}
	return u
}

// OpenConns is the number of connections the upstream has not seen closed.
func (u *Upstream) OpenConns() int64 { return u.NewConns.Load() - u.ClosedConns.Load() }

// OneRoute is a config with one upstream, up at url, and one route, r,
// sending every path to it; route holds the route's policy keys, indented
// by four spaces.
func OneRoute(url, route string) string {
	return `
upstreams:
  up: { url: "` + url + `" }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: up
` + route
}

// RawTLSUpstream is an https upstream (httptest's certificate, HTTP/1.1
// only) that writes its answers by hand, for bytes no net/http server
// would send: respond(req) is the whole response to req, written raw on
// the TLS connection; "" closes it. The connection is read for the next
// request until the client closes it. It is closed when the test ends;
// clients trust it with insecure_skip_verify or its Certificate.
func RawTLSUpstream(t testing.TB, respond func(req *http.Request) string) *httptest.Server {
	t.Helper()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		for {
			out := respond(r)
			if out == "" {
				return
			}
			if _, err := io.WriteString(conn, out); err != nil {
				return
			}
			if r, err = http.ReadRequest(brw.Reader); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, r.Body)
		}
	}))
	up.StartTLS()
	t.Cleanup(up.Close)
	return up
}
