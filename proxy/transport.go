package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/transport"
)

// transportSettings are the upstream keys that shape its connections; a
// reload that leaves them alone keeps the transport and its pool.
type transportSettings struct {
	Scheme                string
	Transport             string // fast | standard
	TLS                   config.TLS
	ConnectTimeout        config.Duration
	ResponseHeaderTimeout config.Duration
	MaxConns              int
	MaxIdleConns          int
	IdleConnTimeout       config.Duration
}

func settingsOf(u *config.Upstream, scheme string) transportSettings {
	return transportSettings{scheme, u.Transport, u.TLS, u.ConnectTimeout, u.ResponseHeaderTimeout, u.MaxConns, u.MaxIdleConns, u.IdleConnTimeout}
}

// baseTransport is an upstream's connections: what the policy pipeline
// sends each attempt through. Credentials and load balancing wrap it.
// When a reload drops it, its idle connections are closed at once and the
// rest once the old table's requests have had their grace (Retirer).
type baseTransport interface {
	http.RoundTripper
	lifecycle.Retirer
}

// pool is a net/http or lean transport as a baseTransport.
type pool struct {
	conns interface {
		http.RoundTripper
		CloseIdleConnections()
	}
}

func (p pool) RoundTrip(r *http.Request) (*http.Response, error) { return p.conns.RoundTrip(r) }

// Retire closes the idle connections.
func (p pool) Retire() { p.conns.CloseIdleConnections() }

// Close closes the connections that turned idle since: by now the
// requests that held them have ended.
func (p pool) Close(context.Context) error {
	p.conns.CloseIdleConnections()
	return nil
}

// newBaseTransport is the one place an upstream's base transport is
// built: for a plain http:// upstream, the lean HTTP/1.1 transport with
// net/http's as the fallback for what it does not do (upgrades,
// 100-continue, bodies of unknown length; see transport.Dual.Path); for
// https, net/http's alone.
//
// Why the lean one by default: it costs less per request. Both read the
// upstream's raw header block, so the headers an upstream names in
// Connection are removed even when it also says "close" (net/http's
// parser drops the whole Connection header then, and with it the names).
func newBaseTransport(s transportSettings) (baseTransport, error) {
	t, err := newTransport(s)
	if err != nil {
		return nil, err
	}
	// net/http's transport reads the raw header blocks too when wrapped
	// (transport.Standard), so every path removes those names.
	std := transport.WrapStandard(t)
	if s.Scheme != "http" || s.Transport == "standard" {
		return pool{std}, nil
	}
	return pool{transport.New(transport.Settings{
		Scheme:                 s.Scheme,
		ConnectTimeout:         s.ConnectTimeout.D(),
		ResponseHeaderTimeout:  s.ResponseHeaderTimeout.D(),
		MaxConns:               s.MaxConns,
		MaxIdleConns:           s.MaxIdleConns,
		IdleConnTimeout:        s.IdleConnTimeout.D(),
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}, std)}, nil
}

// maxResponseHeaderBytes bounds an upstream's response headers on both
// paths (net/http's own default is 10 MB).
const maxResponseHeaderBytes = 64 << 10

// newTransport builds one upstream's net/http transport. Every field is set on
// purpose; Go's zero values suit a browser, not a proxy.
func newTransport(s transportSettings) (*http.Transport, error) {
	dialer := &net.Dialer{Timeout: s.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:       nil, // never a proxy from the environment: a sidecar talks to its upstream directly
		DialContext: dialer.DialContext,
		// Per host, not Go's default of 2: a busy route would otherwise
		// open and close a connection for most requests.
		MaxIdleConnsPerHost: s.MaxIdleConns,
		MaxIdleConns:        0,
		MaxConnsPerHost:     s.MaxConns,
		// Closed before a typical upstream's own keep-alive timeout, so a
		// request rarely lands on a connection the upstream just closed.
		IdleConnTimeout:       s.IdleConnTimeout.D(),
		ResponseHeaderTimeout: s.ResponseHeaderTimeout.D(),
		TLSHandshakeTimeout:   s.ConnectTimeout.D(),
		ExpectContinueTimeout: time.Second,
		// A proxy must not add Accept-Encoding nor decompress: bodies pass
		// through byte for byte.
		DisableCompression: true,
		ForceAttemptHTTP2:  s.Scheme == "https",
		WriteBufferSize:    32 << 10,
		ReadBufferSize:     32 << 10,

		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	if s.Scheme == "https" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.TLS.ServerName, InsecureSkipVerify: s.TLS.InsecureSkipVerify} //nolint:gosec // opt-in by config
		if s.TLS.CAFile != "" {
			pem, err := os.ReadFile(s.TLS.CAFile)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificates in %s", s.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		t.TLSClientConfig = tc
	}
	return t, nil
}
