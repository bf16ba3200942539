package transport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
)

// H1 is a synchronous HTTP/1.1 http.RoundTripper for plain http://
// upstreams: one request at a time per connection, written with
// (*http.Request).Write and read with http.ReadResponse, on buffers pooled
// across connections (an idle connection holds none).
//
// Each upstream host gets a pool of keep-alive connections (see Settings).
// A response body returns its connection to the pool only at a clean end;
// a read error, a Close before the end or a cancelled request context
// closes it. Interim 1xx responses go to the request's
// httptrace.ClientTrace.Got1xxResponse. Headers that the upstream names in
// Connection are removed from the response, even beside "close".
//
// H1 does not do TLS, HTTP/2, protocol upgrades or Expect: 100-continue,
// and it writes a request body fully before reading the response; Dual
// sends those requests elsewhere. Use NewH1; the zero value is not usable.
type H1 struct {
	s      Settings
	dialer net.Dialer

	mu    sync.Mutex
	pools map[string]*pool
	last  atomic.Pointer[pool] // the pool used last: one lookup-free hit per request for the usual single host

	readers sync.Pool // *bufio.Reader of s.maxHeader() bytes
	writers sync.Pool // *bufio.Writer
}

// NewH1 returns an H1 with the given settings.
func NewH1(s Settings) *H1 {
	return &H1{
		s:      s,
		dialer: net.Dialer{Timeout: s.ConnectTimeout, KeepAlive: tcpKeepAlive},
		pools:  make(map[string]*pool),
	}
}

var errNotHTTP = errors.New("upstream: H1 carries only http:// requests with a host")

// RoundTrip sends req and returns the response with its header read.
//
// A request that failed on a reused connection before any byte of the
// response came back is sent once more, on a new connection, under
// net/http's own rule (Transport.shouldRetryRequest): if no byte of it was
// written, when its body can be replayed (none, or GetBody); if it was
// written, only when it is also idempotent (GET, HEAD, OPTIONS, TRACE, or
// an Idempotency-Key header), since the upstream may have acted on it.
func (t *H1) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		closeBody(req)
		return nil, errNotHTTP
	}
	p := t.pool(req.URL.Host)
	ctx := req.Context()
	for retried := false; ; retried = true {
		c, err := p.get(ctx, retried)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		reused := c.reused
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		var r *retryable
		if !errors.As(err, &r) {
			return nil, err
		}
		if retried || !reused || ctx.Err() != nil || !replayable(req, r.nothingWritten) {
			return nil, r.err
		}
		if req.Body != nil && req.Body != http.NoBody {
			b, gerr := req.GetBody()
			if gerr != nil {
				return nil, r.err
			}
			rewound := *req // RoundTrip must not modify the caller's request
			rewound.Body = b
			req = &rewound
		}
	}
}

// replayable is net/http's retry rule for a request that failed on a
// reused connection before any byte of the response.
func replayable(req *http.Request, nothingWritten bool) bool {
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody && req.GetBody == nil {
		return false
	}
	if nothingWritten {
		return true
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// CloseIdleConnections closes every idle connection; busy ones are closed
// as their responses end, if at all, as usual.
func (t *H1) CloseIdleConnections() {
	t.mu.Lock()
	pools := make([]*pool, 0, len(t.pools))
	for _, p := range t.pools {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.closeIdle()
	}
}

func (t *H1) pool(host string) *pool {
	if p := t.last.Load(); p != nil && p.key == host {
		return p
	}
	t.mu.Lock()
	p := t.pools[host]
	if p == nil {
		p = &pool{t: t, key: host, addr: dialAddr(host)}
		t.pools[host] = p
	}
	t.mu.Unlock()
	t.last.Store(p)
	return p
}

// dialAddr adds port 80 to a host that names none, as net/http does.
func dialAddr(host string) string {
	u := url.URL{Host: host}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (t *H1) reader(r io.Reader) *bufio.Reader {
	if br, _ := t.readers.Get().(*bufio.Reader); br != nil {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, t.s.maxHeader())
}

func (t *H1) putReader(br *bufio.Reader) {
	br.Reset(nil)
	t.readers.Put(br)
}

func (t *H1) writer(w io.Writer) *bufio.Writer {
	if bw, _ := t.writers.Get().(*bufio.Writer); bw != nil {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, writeBufferSize)
}

func (t *H1) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	t.writers.Put(bw)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
