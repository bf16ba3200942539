package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
)

// Standard is net/http's Transport with what H1 does about Connection:
// the headers an upstream names in it are removed from the response, also
// when it says "close" too. net/http drops the whole Connection header
// then (transfer.go, shouldClose), names and all, before anyone can read
// them; so Standard reads them itself, from the raw bytes of each
// HTTP/1.x connection, as they pass to net/http's parser (see rawConn).
//
// For https, Standard does the TLS handshake itself (DialTLSContext), to
// sit above TLS: with the transport's tls.Config, SNI as net/http sends
// it, and h2 offered when ForceAttemptHTTP2 is set. A connection that
// negotiates h2 is handed over as the *tls.Conn it is, so HTTP/2 goes on
// as before; HTTP/2 has no Connection header to lose. Use WrapStandard.
type Standard struct {
	t *http.Transport
}

// WrapStandard makes t a Standard: it sets t's DialContext and
// DialTLSContext (wrapping the DialContext it has); t must not be used
// directly after.
func WrapStandard(t *http.Transport) *Standard {
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &rawConn{Conn: nc, limit: headLimit(t)}, nil
	}
	t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialTLS(ctx, t, dial, network, addr)
	}
	return &Standard{t: t}
}

// headLimit is how much of one header block rawConn holds: more than
// net/http accepts, so that a block net/http parses is always seen whole.
func headLimit(t *http.Transport) int {
	n := t.MaxResponseHeaderBytes
	if n <= 0 {
		n = 10 << 20 // net/http's default
	}
	return int(n) + 4<<10
}

// dialTLS is net/http's own TLS dial, done here so that the connection
// can be wrapped above TLS.
func dialTLS(ctx context.Context, t *http.Transport, dial func(context.Context, string, string) (net.Conn, error), network, addr string) (net.Conn, error) {
	nc, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := t.TLSClientConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"http/1.1"}
	if t.ForceAttemptHTTP2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	tc := tls.Client(nc, cfg)
	hctx := ctx
	if d := t.TLSHandshakeTimeout; d > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		return nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		return tc, nil
	}
	return &rawConn{Conn: tc, limit: headLimit(t)}, nil
}

var errHeadUnseen = errors.New("upstream: the response header could not be checked for Connection names")

// RoundTrip sends req through net/http's Transport and removes from the
// response the headers the upstream named in Connection.
func (s *Standard) RoundTrip(req *http.Request) (*http.Response, error) {
	var used atomic.Pointer[rawConn]
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		rc, _ := info.Conn.(*rawConn)
		if rc != nil {
			// Before the request is written: what the connection reads
			// from now on is this request's response.
			rc.expect()
		}
		used.Store(rc)
	}}
	out := req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := s.t.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	resp.Request = req
	rc := used.Load()
	if rc == nil {
		return resp, nil // HTTP/2
	}
	names, seen := rc.nominated()
	if !seen {
		resp.Body.Close()
		return nil, errHeadUnseen
	}
	for _, n := range names {
		if resp.StatusCode == http.StatusSwitchingProtocols && strings.EqualFold(n, "upgrade") {
			continue // the upgrade itself: ReverseProxy needs it
		}
		resp.Header.Del(n)
	}
	return resp, nil
}

// CloseIdleConnections closes net/http's idle connections.
func (s *Standard) CloseIdleConnections() { s.t.CloseIdleConnections() }

// rawConn is an HTTP/1.x connection of net/http's Transport that reads the
// header blocks of each response as net/http's parser is given them, and
// keeps the names the final one nominates in Connection.
//
// net/http reads a connection for one request at a time; expect marks the
// start of a response (when the transport takes the connection, before it
// writes the request), and from then on the bytes read are header blocks
// (interim 1xx ones, then the final one) until the final block ends; what
// follows, the body, is not looked at.
type rawConn struct {
	net.Conn
	limit int

	mu      sync.Mutex
	reading bool   // between expect and the end of the final header block
	head    []byte // the header block read so far
	names   []string
	seen    bool // the final header block was read whole
}

func (c *rawConn) expect() {
	c.mu.Lock()
	c.reading, c.seen, c.head, c.names = true, false, c.head[:0], nil
	c.mu.Unlock()
}

func (c *rawConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if c.reading {
			c.scan(p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

// scan takes the next bytes of the response's header blocks.
func (c *rawConn) scan(b []byte) {
	from := max(0, len(c.head)-3) // the end may straddle two reads
	c.head = append(c.head, b...)
	for {
		end := headEnd(c.head, from)
		if end < 0 {
			if len(c.head) > c.limit {
				c.reading, c.head = false, nil // never seen whole: RoundTrip refuses it
			}
			return
		}
		block := c.head[:end]
		if !interim(block) {
			c.names, _ = connectionTokens(block)
			c.reading, c.seen, c.head = false, true, c.head[:0]
			return
		}
		c.head = append(c.head[:0], c.head[end:]...)
		from = 0
	}
}

// interim reports a 1xx header block that net/http reads past (all but 101).
func interim(block []byte) bool {
	// "HTTP/1.1 1xx": the status code starts after the first space.
	i := bytes.IndexByte(block[:min(len(block), 16)], ' ')
	if i < 0 || i+3 >= len(block) {
		return false
	}
	code := block[i+1 : i+4]
	return code[0] == '1' && string(code) != "101"
}

// nominated is what the final header block named in Connection, and
// whether that block was seen whole.
func (c *rawConn) nominated() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.names, c.seen
}
