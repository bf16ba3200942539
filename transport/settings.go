// Package transport holds the transports that carry requests to an
// upstream: H1, a lean synchronous HTTP/1.1 transport for plain http://
// upstreams, and Dual, which sends each request either to H1 or to a
// standard *http.Transport for what H1 does not do (TLS, HTTP/2, upgrades,
// Expect: 100-continue, bodies without a length or with trailers).
//
// H1 exists for two reasons (issues #11 and #16). net/http's Transport
// deletes an upstream's whole Connection header when it says "close"
// (transfer.go, shouldClose), so httputil.ReverseProxy never sees the
// other headers it nominates as hop-by-hop and forwards them to the client;
// H1 reads the raw header block and strips them itself. And a proxy that
// sends one request at a time per connection does not need Transport's two
// goroutines per connection and channel hand-offs per request.
//
// NewBase builds an upstream's base transport from its config (Config):
// Dual, or net/http's alone for https and transport: standard, as a
// lifecycle item whose pool a reload keeps while the settings stay. It
// is what the policy pipeline and the health checks (package health) send
// through. The package imports config and lifecycle, never proxy.
package transport

import "time"

// Settings shape the connections to one upstream. The zero value is
// usable; where a field exists on net/http's Transport too, zero means the
// same thing there, so one config value behaves the same on both paths.
type Settings struct {
	// Scheme is the upstream URL's scheme. Dual builds its lean path only
	// for "http" (or ""); with any other scheme every request goes to the
	// standard transport.
	Scheme string
	// ConnectTimeout bounds a dial; 0 means only the request's context
	// bounds it.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response header once
	// the request is written; 0 means only the request's context bounds it.
	ResponseHeaderTimeout time.Duration
	// MaxConns caps the connections per upstream host, dialing, busy and
	// idle together; a request waits for a free one within its context.
	// 0 means no limit.
	MaxConns int
	// MaxIdleConns caps the idle keep-alive connections kept per upstream
	// host. 0 means 2, net/http's DefaultMaxIdleConnsPerHost; a negative
	// value keeps none.
	MaxIdleConns int
	// IdleConnTimeout closes a connection that has been idle this long;
	// 0 means idle connections are never closed for their age.
	IdleConnTimeout time.Duration
	// MaxResponseHeaderBytes caps one response header block (status line,
	// fields and the empty line); a larger one fails the request. It is
	// also the size of the pooled read buffer, which must hold the whole
	// block to scan it. 0 means 64 KiB.
	MaxResponseHeaderBytes int
}

const (
	// defaultMaxIdleConns is net/http's DefaultMaxIdleConnsPerHost, so
	// max_idle_conns: 0 means the same on both paths.
	defaultMaxIdleConns = 2
	// defaultMaxResponseHeader is far above what real APIs send (nginx
	// refuses upstream headers over 4-8 KiB by default) and small enough
	// to be the read buffer of every in-flight response.
	defaultMaxResponseHeader = 64 << 10
	// writeBufferSize matches the standard path's WriteBufferSize; the
	// buffer is pooled and held only while a request is being written.
	writeBufferSize = 32 << 10
	// max1xx bounds the interim responses read before the final one, so
	// an upstream cannot keep a request busy with an endless 1xx stream.
	max1xx = 10
	// tcpKeepAlive matches the standard path's dialer.
	tcpKeepAlive = 30 * time.Second
)

func (s Settings) maxIdle() int {
	switch {
	case s.MaxIdleConns == 0:
		return defaultMaxIdleConns
	case s.MaxIdleConns < 0:
		return 0
	}
	return s.MaxIdleConns
}

func (s Settings) maxHeader() int {
	if s.MaxResponseHeaderBytes <= 0 {
		return defaultMaxResponseHeader
	}
	return s.MaxResponseHeaderBytes
}
