package transport

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
)

// Config is what of a config upstream shapes its connections: a reload
// that leaves it alone keeps the base transport and its pool (it is the
// lifecycle registry's key for them). Settings is the part of it that H1
// takes.
type Config struct {
	Scheme                string
	Transport             string // fast | standard
	TLS                   config.TLS
	ConnectTimeout        config.Duration
	ResponseHeaderTimeout config.Duration
	MaxConns              int
	MaxIdleConns          int
	IdleConnTimeout       config.Duration
}

// ConfigOf is u's Config for a target of the given URL scheme.
func ConfigOf(u *config.Upstream, scheme string) Config {
	return Config{scheme, u.Transport, u.TLS, u.ConnectTimeout, u.ResponseHeaderTimeout, u.MaxConns, u.MaxIdleConns, u.IdleConnTimeout}
}

// Base is an upstream's connections: what the policy pipeline sends each
// attempt through, and health checks too. Credentials and load balancing
// wrap it. When a reload drops it, its idle connections are closed at
// once and the rest once the old table's requests have had their grace
// (lifecycle.Retirer).
type Base struct {
	conns interface {
		http.RoundTripper
		CloseIdleConnections()
	}
}

var _ lifecycle.Retirer = (*Base)(nil)

// RoundTrip sends r on one of the connections.
func (b *Base) RoundTrip(r *http.Request) (*http.Response, error) { return b.conns.RoundTrip(r) }

// Retire closes the idle connections.
func (b *Base) Retire() { b.conns.CloseIdleConnections() }

// Close closes the connections that turned idle since: by now the
// requests that held them have ended.
func (b *Base) Close(context.Context) error {
	b.conns.CloseIdleConnections()
	return nil
}

// NewBase is the one place an upstream's base transport is built: for a
// plain http:// upstream, the lean HTTP/1.1 transport with net/http's as
// the fallback for what it does not do (upgrades, 100-continue, bodies of
// unknown length; see Dual.Path); for https, or with transport: standard,
// net/http's alone.
//
// Why the lean one by default: it costs less per request. Both read the
// upstream's raw header block, so the headers an upstream names in
// Connection are removed even when it also says "close" (net/http's
// parser drops the whole Connection header then, and with it the names).
func NewBase(c Config) (*Base, error) {
	t, err := newNetHTTP(c)
	if err != nil {
		return nil, err
	}
	// net/http's transport reads the raw header blocks too when wrapped
	// (Standard), so every path removes those names.
	std := WrapStandard(t)
	if c.Scheme != "http" || c.Transport == "standard" {
		return &Base{std}, nil
	}
	return &Base{New(Settings{
		Scheme:                 c.Scheme,
		ConnectTimeout:         c.ConnectTimeout.D(),
		ResponseHeaderTimeout:  c.ResponseHeaderTimeout.D(),
		MaxConns:               c.MaxConns,
		MaxIdleConns:           c.MaxIdleConns,
		IdleConnTimeout:        c.IdleConnTimeout.D(),
		MaxResponseHeaderBytes: defaultMaxResponseHeader,
	}, std)}, nil
}

// newNetHTTP builds one upstream's net/http transport. Every field is
// set on purpose; Go's zero values suit a browser, not a proxy.
func newNetHTTP(c Config) (*http.Transport, error) {
	dialer := &net.Dialer{Timeout: c.ConnectTimeout.D(), KeepAlive: tcpKeepAlive}
	t := &http.Transport{
		Proxy:       nil, // never a proxy from the environment: a sidecar talks to its upstream directly
		DialContext: dialer.DialContext,
		// Per host, not Go's default of 2: a busy route would otherwise
		// open and close a connection for most requests.
		MaxIdleConnsPerHost: c.MaxIdleConns,
		MaxIdleConns:        0,
		MaxConnsPerHost:     c.MaxConns,
		// Closed before a typical upstream's own keep-alive timeout, so a
		// request rarely lands on a connection the upstream just closed.
		IdleConnTimeout:       c.IdleConnTimeout.D(),
		ResponseHeaderTimeout: c.ResponseHeaderTimeout.D(),
		TLSHandshakeTimeout:   c.ConnectTimeout.D(),
		ExpectContinueTimeout: time.Second,
		// A proxy must not add Accept-Encoding nor decompress: bodies pass
		// through byte for byte.
		DisableCompression: true,
		ForceAttemptHTTP2:  c.Scheme == "https",
		WriteBufferSize:    writeBufferSize,
		ReadBufferSize:     32 << 10,
		// The lean path's bound, so both bound an upstream's response
		// headers alike (net/http's own default is 10 MB).
		MaxResponseHeaderBytes: defaultMaxResponseHeader,
	}
	if c.Scheme == "https" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // opt-in by config
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, err
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificates in %s", c.TLS.CAFile)
			}
			tc.RootCAs = roots
		}
		t.TLSClientConfig = tc
	}
	return t, nil
}
