package transport

import (
	"errors"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// The paths a request can take through Dual.
const (
	PathFast     = "fast"     // H1
	PathStandard = "standard" // the standard transport given to New
)

// Dual is an upstream's base http.RoundTripper: each request takes H1 when
// H1 can carry it, and the standard transport otherwise.
type Dual struct {
	fast     *H1 // nil unless Settings.Scheme is "http" or ""
	standard http.RoundTripper
}

// New returns a Dual for one upstream. standard carries what H1 does not
// (https and HTTP/2, upgrades, Expect: 100-continue, request bodies
// without a length or with trailers); it is typically a tuned
// *http.Transport. A nil standard makes those requests fail.
func New(s Settings, standard http.RoundTripper) *Dual {
	d := &Dual{standard: standard}
	if s.Scheme == "" || s.Scheme == "http" {
		d.fast = NewH1(s)
	}
	return d
}

var errNoStandard = errors.New("upstream: this request needs the standard transport, and there is none")

// RoundTrip sends req on the path that Path names.
func (d *Dual) RoundTrip(req *http.Request) (*http.Response, error) {
	if d.Path(req) == PathFast {
		return d.fast.RoundTrip(req)
	}
	if d.standard == nil {
		closeBody(req)
		return nil, errNoStandard
	}
	return d.standard.RoundTrip(req)
}

// Path says which transport carries req: PathFast or PathStandard. It is
// the one place where that choice is made, once per request.
func (d *Dual) Path(req *http.Request) string {
	if d.fast == nil || !leanFits(req) {
		return PathStandard
	}
	return PathFast
}

// leanFits reports whether H1 carries req as net/http's Transport would.
func leanFits(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.Method == http.MethodConnect {
		return false
	}
	h := req.Header
	// Upgrades (WebSocket) need the connection handed over after the 101.
	if len(h["Upgrade"]) > 0 || httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade") {
		return false
	}
	// 100-continue needs the body written only after the upstream's go-ahead.
	if httpguts.HeaderValuesContainsToken(h["Expect"], "100-continue") {
		return false
	}
	// Bodies without a length or with trailers are chunked, and an upload
	// that may never end should be read concurrently with the response.
	if len(req.Trailer) > 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength <= 0 {
		return false
	}
	return true
}

// CloseIdleConnections closes the idle connections of both paths.
func (d *Dual) CloseIdleConnections() {
	if d.fast != nil {
		d.fast.CloseIdleConnections()
	}
	if c, ok := d.standard.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
