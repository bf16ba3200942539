package auth

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/breakwater-proxy/breakwater/config"
)

// Observer is told of every token request. Implementations must be safe
// for concurrent use and must not block.
type Observer interface {
	// TokenRequested reports one token request: ok, the token's lifetime
	// (0 when the server gave none) and why it was asked (first, renew,
	// forced by a 401, retry after a failure); err is nil on success.
	TokenRequested(upstream string, ev Event)
}

// Event is one token request, as safe to publish: never the token.
type Event struct {
	Reason    string        // first | renew | forced | retry
	OK        bool          // a token was obtained
	ExpiresIn time.Duration // its lifetime; 0 = no expiry given, or no token
	Err       *Error        // nil on success
	// WriteErr is set when a rotated refresh token could not be written
	// back to its file (it is kept in memory meanwhile).
	WriteErr string
}

// Status is a source's state for /health and metrics.
type Status struct {
	Upstream string
	// Valid: a token is held and has not expired.
	Valid bool
	// Expiry is when the held token expires; zero without a token or
	// when the server gave no expiry.
	Expiry time.Time
	// LastError is the last failed request's message ("" after a success).
	LastError string
}

// Timings shape renewal; the zero value of a field means its default.
type Timings struct {
	// RequestTimeout bounds one token request (default 30s).
	RequestTimeout time.Duration
	// RetryMin and RetryMax bound the backoff after failed requests
	// (defaults 1s and 30s): a failure waits RetryMin, each further one
	// twice as long, up to RetryMax. Meanwhile a caller without a valid
	// token is answered with the last failure at once, and a valid token
	// is renewed again when the backoff ends (never past its expiry).
	RetryMin, RetryMax time.Duration
	// MinInterval is the least time between two token requests, whatever
	// asks for them (default 1s): SPEC Part 3, "Token endpoints".
	MinInterval time.Duration
}

// Source is one upstream's token: fetched on first use, renewed in the
// background refresh_before its expiry, one request at a time however
// many callers wait, never two within Timings.MinInterval, failures
// backing off. It is safe for concurrent use. Close stops it.
type Source struct {
	name    string
	cfg     config.OAuth2
	obs     Observer
	timings Timings
	client  *http.Client
	// minRenew is auth.oauth2.min_renew_interval: forced renewals (after
	// an upstream 401) are at least this far apart.
	minRenew time.Duration

	mu       sync.Mutex
	tok      *oauth2.Token // nil: none yet, or dropped after a 401
	call     *call         // the request in flight; nil when none
	lastErr  *Error        // the last request's failure, nil after a success
	failedAt time.Time
	failures int         // consecutive failures, for the backoff
	sentAt   time.Time   // when the last token request was (or is to be) sent
	forcedAt time.Time   // when the last forced renewal was started
	timer    *time.Timer // the next background renewal
	closed   bool        // Close was called
	refresh  string      // refresh_token grant: the refresh token in use
	fileSeen string      // ... and the file's content when last read or written
}

// call is one token request that any number of callers wait for.
type call struct {
	done chan struct{}
	tok  *oauth2.Token
	err  *Error
}

// New makes the source of upstream name's token; c must come from a
// validated config. obs nil reports nothing.
func New(name string, c *config.OAuth2, obs Observer, t Timings) *Source {
	if obs == nil {
		obs = nopObserver{}
	}
	if t.RequestTimeout <= 0 {
		t.RequestTimeout = 30 * time.Second
	}
	if t.RetryMin <= 0 {
		t.RetryMin = time.Second
	}
	if t.RetryMax <= 0 {
		t.RetryMax = 30 * time.Second
	}
	if t.MinInterval <= 0 {
		t.MinInterval = time.Second
	}
	minRenew := c.MinRenewInterval.D()
	if minRenew <= 0 {
		minRenew = 10 * time.Second // config's default, for a block that skipped defaults
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	base := &http.Transport{
		Proxy:               nil, // a sidecar talks to the token endpoint directly, as to its upstream
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	var rt http.RoundTripper = base
	if len(c.Params) > 0 {
		rt = paramsTransport{params: c.Params, next: base}
	}
	return &Source{name: name, cfg: *c, obs: obs, timings: t, minRenew: minRenew,
		client: tokenClient(rt, t.RequestTimeout)}
}

// tokenClient is the HTTP client of token requests. It follows no
// redirect: the client's credentials (Basic header, or client_secret in
// the form) go to token_url only, and a 3xx is then a failure like any
// other non-2xx answer (x/oauth2 returns a RetrieveError).
func tokenClient(rt http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: rt, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type nopObserver struct{}

func (nopObserver) TokenRequested(string, Event) {}

// Token returns a valid access token, waiting (at most until ctx ends)
// for a request when none is held. During the backoff after a failed
// request, it returns that failure at once.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	if s.tok != nil && s.valid(s.tok) {
		v := s.tok.AccessToken
		s.mu.Unlock()
		return v, nil
	}
	if err := s.backingOffLocked(); err != nil {
		s.mu.Unlock()
		return "", err
	}
	c := s.startLocked("first")
	s.mu.Unlock()
	return wait(ctx, c)
}

// errRenewTooSoon: the upstream refused the token within
// min_renew_interval of the last forced renewal; the 401 passes through.
var errRenewTooSoon = errors.New("a forced renewal ran less than min_renew_interval ago")

// Renew is the forced renewal after the upstream refused stale with a
// 401: the token is dropped and a new one requested, unless another
// caller already did so (then the newer token is returned at once). It
// fails with errRenewTooSoon, asking nothing, within min_renew_interval
// of the last forced renewal.
func (s *Source) Renew(ctx context.Context, stale string) (string, error) {
	c, tok, err := s.forceRenew(stale)
	if c == nil {
		return tok, err
	}
	return wait(ctx, c)
}

// forceRenew decides Renew at once: a newer token (tok), a failure, or
// the request to wait for (c).
func (s *Source) forceRenew(stale string) (c *call, tok string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken != stale && s.valid(s.tok) {
		return nil, s.tok.AccessToken, nil
	}
	if s.call != nil {
		return s.call, "", nil // a request in flight brings a newer token
	}
	if !s.forcedAt.IsZero() && time.Since(s.forcedAt) < s.minRenew {
		return nil, "", errRenewTooSoon
	}
	if err := s.backingOffLocked(); err != nil {
		return nil, "", err
	}
	if s.tok != nil && s.tok.AccessToken == stale {
		s.tok = nil
	}
	s.forcedAt = time.Now()
	return s.startLocked("forced"), "", nil
}

// backingOffLocked is the last failure while its backoff lasts (no
// request in flight), else nil. s.mu is held.
func (s *Source) backingOffLocked() *Error {
	if s.call == nil && s.lastErr != nil && time.Since(s.failedAt) < s.failDelay() {
		return s.lastErr
	}
	return nil
}

func wait(ctx context.Context, c *call) (string, error) {
	select {
	case <-c.done:
		if c.err != nil {
			return "", c.err
		}
		return c.tok.AccessToken, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// valid: the token has not expired (a second of slack for the trip).
func (s *Source) valid(t *oauth2.Token) bool {
	return t.Expiry.IsZero() || time.Until(t.Expiry) > time.Second
}

// startLocked joins the request in flight or starts one, sent no sooner
// than MinInterval after the last one. s.mu is held.
func (s *Source) startLocked(reason string) *call {
	if s.call != nil {
		return s.call
	}
	c := &call{done: make(chan struct{})}
	s.call = c
	if s.timer != nil {
		s.timer.Stop() // this request takes the scheduled renewal's place
		s.timer = nil
	}
	now := time.Now()
	at := now
	if !s.sentAt.IsZero() {
		at = later(at, s.sentAt.Add(s.timings.MinInterval))
	}
	s.sentAt = at
	go s.fetch(c, reason, at.Sub(now))
	return c
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fetch runs one token request, after delay, and schedules the next. It
// runs on its own goroutine with its own deadline: a caller that leaves
// does not cancel the request others wait for.
func (s *Source) fetch(c *call, reason string, delay time.Duration) {
	if delay > 0 {
		time.Sleep(delay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timings.RequestTimeout)
	defer cancel()
	tok, writeErr, err := s.request(ctx)
	ev := Event{Reason: reason, WriteErr: writeErr}
	s.mu.Lock()
	s.call = nil
	if err != nil {
		c.err = newError(s.name, err)
		s.lastErr, s.failedAt = c.err, time.Now()
		s.failures++
		ev.Err = c.err
		// Keep a token that is still valid and retry before it expires,
		// backing off; without one, the next caller after the backoff
		// asks again.
		if s.tok != nil && s.valid(s.tok) {
			s.scheduleLocked(s.backoff(), "retry")
		}
	} else {
		c.tok = tok
		s.tok, s.lastErr, s.failures = tok, nil, 0
		ev.OK = true
		if !tok.Expiry.IsZero() {
			life := time.Until(tok.Expiry)
			ev.ExpiresIn = life
			s.scheduleLocked(life-min(s.cfg.RefreshBefore.D(), life/2), "renew")
		}
	}
	s.mu.Unlock()
	close(c.done)
	s.obs.TokenRequested(s.name, ev)
}

// failDelay is the backoff after s.failures consecutive failures:
// doubling from RetryMin to RetryMax.
func (s *Source) failDelay() time.Duration {
	d := s.timings.RetryMin
	for i := 1; i < s.failures && d < s.timings.RetryMax; i++ {
		d *= 2
	}
	return min(d, s.timings.RetryMax)
}

// backoff is the wait before retrying a failed renewal: failDelay, and
// never past the current token's expiry.
func (s *Source) backoff() time.Duration {
	d := s.failDelay()
	if s.tok != nil && !s.tok.Expiry.IsZero() {
		d = min(d, max(time.Until(s.tok.Expiry)-time.Second, 0))
	}
	return d
}

// scheduleLocked arms the background renewal. s.mu is held.
func (s *Source) scheduleLocked(after time.Duration, reason string) {
	if s.closed {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = time.AfterFunc(max(after, 0), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			s.startLocked(reason)
		}
	})
}

// Close stops background renewal; a request in flight finishes. A closed
// source still answers Token (a request that started on the old config
// finishes with it) but renews nothing on its own.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.client.CloseIdleConnections()
}

// Wait returns once the token request in flight, if any, has ended, or
// when ctx ends: after Close, what the source started is then done.
func (s *Source) Wait(ctx context.Context) error {
	s.mu.Lock()
	c := s.call
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is the source's state now.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Upstream: s.name}
	if s.tok != nil {
		st.Valid, st.Expiry = s.valid(s.tok), s.tok.Expiry
	}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// Name is the upstream's name.
func (s *Source) Name() string { return s.name }

// request asks the token endpoint once, by the configured grant.
func (s *Source) request(ctx context.Context) (tok *oauth2.Token, writeErr string, err error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.client)
	o := &s.cfg
	style := oauth2.AuthStyleInHeader
	if o.AuthStyle == "params" {
		style = oauth2.AuthStyleInParams
	}
	switch o.Grant {
	case config.GrantPassword:
		conf := s.oauth2Config(style)
		tok, err = conf.PasswordCredentialsToken(ctx, o.Username, o.Password.Reveal())
	case config.GrantRefreshToken:
		return s.refreshRequest(ctx, style)
	default:
		cc := &clientcredentials.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret.Reveal(),
			TokenURL: o.TokenURL, Scopes: o.Scopes, AuthStyle: style}
		tok, err = cc.Token(ctx)
	}
	if err == nil && noLifetime(tok) {
		return nil, "", errNoLifetime
	}
	return tok, "", err
}

// errNoLifetime: the token endpoint gave expires_in ≤ 0. Such a token is
// due for renewal before it is used; taking it would renew it at once,
// again and again (SPEC Part 3: a failure).
var errNoLifetime = errors.New("the token it issued has no positive lifetime (expires_in ≤ 0)")

// noLifetime reports whether tok came with an expires_in that is not
// positive. x/oauth2 gives a negative one an expiry in the past and
// treats 0 as absent, so 0 is told from absent by the raw answer (a form
// answer yields "" for a missing key).
func noLifetime(tok *oauth2.Token) bool {
	if !tok.Expiry.IsZero() {
		return !tok.Expiry.After(time.Now())
	}
	v := tok.Extra("expires_in")
	return v != nil && v != ""
}

func (s *Source) oauth2Config(style oauth2.AuthStyle) *oauth2.Config {
	o := &s.cfg
	return &oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret.Reveal(), Scopes: o.Scopes,
		Endpoint: oauth2.Endpoint{TokenURL: o.TokenURL, AuthURL: o.AuthURL, AuthStyle: style}}
}

// maxRefreshTokenFile bounds what is read of refresh_token_file: a token
// is bytes, not megabytes.
const maxRefreshTokenFile = 64 << 10

var (
	errNoRefreshToken   = errors.New("the refresh_token_file is empty: run `breakwater oauth2 login`")
	errReadRefreshToken = errors.New("the refresh_token_file cannot be read")
)

// refreshRequest runs the refresh_token grant. The refresh token is read
// from its file on every request (a new `oauth2 login` takes effect), and
// a rotated one is written back before the new access token is used: the
// old refresh token may already be void.
func (s *Source) refreshRequest(ctx context.Context, style oauth2.AuthStyle) (*oauth2.Token, string, error) {
	b, err := config.ReadRegular(s.cfg.RefreshTokenFile, maxRefreshTokenFile) // a named pipe must not block the renewal
	if err != nil {
		return nil, "", errReadRefreshToken
	}
	s.mu.Lock()
	if content := strings.TrimRight(string(b), "\r\n"); content != s.fileSeen || s.refresh == "" {
		s.refresh, s.fileSeen = content, content
	}
	rt := s.refresh
	s.mu.Unlock()
	if rt == "" {
		return nil, "", errNoRefreshToken
	}
	tok, err := s.oauth2Config(style).TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return nil, "", err
	}
	var writeErr string
	if tok.RefreshToken != "" && tok.RefreshToken != rt {
		s.mu.Lock()
		s.refresh = tok.RefreshToken
		if err := WriteFileAtomic(s.cfg.RefreshTokenFile, []byte(tok.RefreshToken+"\n")); err != nil {
			writeErr = "the rotated refresh token could not be written to refresh_token_file (kept in memory): " + errText(err)
		} else {
			s.fileSeen = tok.RefreshToken
		}
		s.mu.Unlock()
	}
	if noLifetime(tok) {
		// Checked after the rotation is kept: the old refresh token may
		// already be void.
		return nil, writeErr, errNoLifetime
	}
	return tok, writeErr, nil
}

// errText is an os error without its path's content: the path is config,
// the error's text (permission denied…) is safe.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Op + " " + pe.Path + ": " + pe.Err.Error()
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Op + " " + le.New + ": " + le.Err.Error()
	}
	return "write failed"
}

// WriteFileAtomic replaces path with data, mode 0600, through a symlink
// to its target (config.WriteAtomic).
func WriteFileAtomic(path string, data []byte) error {
	return config.WriteAtomic(path, data, 0o600)
}

// paramsTransport adds auth.oauth2.params to every token request's form:
// x/oauth2 takes extra fields for client_credentials only, and the same
// keys should reach the endpoint whatever the grant.
type paramsTransport struct {
	params map[string]string
	next   http.RoundTripper
}

func (p paramsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Method != http.MethodPost {
		return p.next.RoundTrip(r)
	}
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, err
	}
	for k, v := range p.params {
		form.Set(k, v)
	}
	enc := form.Encode()
	out := r.Clone(r.Context())
	out.Body = io.NopCloser(strings.NewReader(enc))
	out.ContentLength = int64(len(enc))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(enc)), nil }
	return p.next.RoundTrip(out)
}
