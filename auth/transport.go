package auth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/drain"
	"github.com/breakwater-proxy/breakwater/internal/ending"
)

// Transport sends each request with the upstream's token as
// `Authorization: Bearer …`, replacing whatever the client sent. On a 401
// to a request sent with a token it renews the token once (forced) and
// sends the request once more, if its body can be replayed (GetBody, or
// no body); a second 401 passes through. That retry happens whatever the
// route's retry settings say: a revoked token is ours to fix, not the
// client's. Forced renewals are at least min_renew_interval apart: a 401
// within it of the last one passes through, asking nothing.
//
// In breakwater, Next is the route's policy pipeline, not the upstream's
// base transport (see proxy/table.go for why): the retry after a 401 is
// an attempt like any other, spending quota and passing the breaker.
type Transport struct {
	Source *Source
	Next   http.RoundTripper
	// Deadline is the latest a request waits for a token (breakwater: the
	// route's timeout); nil or a zero time = until its context ends.
	Deadline func(*http.Request) time.Time
}

// RoundTrip implements http.RoundTripper. A token that cannot be had is
// an error matching ErrUnavailable; nothing is sent upstream then.
//
// Every step runs under the request's clock (SPEC Part 3): the token
// waits end at Deadline or with the request's context, and the 401's
// body, which nobody reads, is discarded with drain.Discard, bounded and
// in the background, so a body that stalls holds neither the renewal nor
// the resend.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.within(req, t.Source.Token)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.Next.RoundTrip(withToken(req, tok))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	body, ok := replay(req)
	if !ok {
		return resp, nil
	}
	c, fresh, err := t.Source.forceRenew(tok)
	if errors.Is(err, errRenewTooSoon) {
		closeReadCloser(body)
		return resp, nil // renewed a moment ago: this 401 is not the token's age
	}
	released := discard(resp.Body)
	if c != nil {
		fresh, err = t.within(req, func(ctx context.Context) (string, error) { return wait(ctx, c) })
	}
	// The first send holds its slots (bulkhead, upstream concurrency)
	// until its body is closed: wait for that, at most drain.MaxTime, so
	// that the resend does not find them taken.
	select {
	case <-released:
	case <-req.Context().Done():
	}
	if err != nil {
		closeReadCloser(body)
		return nil, err // no token to be had: upstream_auth_failed, which says why
	}
	out := withToken(req, fresh)
	out.Body = body
	return t.Next.RoundTrip(out)
}

// discard hands body to drain.Discard; the channel is closed once the
// body is (within drain.MaxTime).
func discard(body io.ReadCloser) <-chan struct{} {
	c := &signalCloser{ReadCloser: body, closed: make(chan struct{})}
	drain.Discard(c)
	return c.closed
}

type signalCloser struct {
	io.ReadCloser
	once   sync.Once
	closed chan struct{}
}

func (c *signalCloser) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// within runs get (a wait for a token) until Deadline. Running out of
// time while the client is still here is the token endpoint's failure,
// reported as such.
func (t *Transport) within(req *http.Request, get func(context.Context) (string, error)) (string, error) {
	ctx := req.Context()
	if t.Deadline != nil {
		if d := t.Deadline(req); !d.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, d)
			defer cancel()
		}
	}
	tok, err := get(ctx)
	if err != nil && ending.Of(context.Cause(ctx), req.Context()) == ending.Timeout {
		err = &Error{Upstream: t.Source.name, Cause: "it did not answer within the route's timeout"}
	}
	return tok, err
}

// withToken is req with its own header map, Authorization replaced.
func withToken(req *http.Request, tok string) *http.Request {
	out := new(http.Request)
	*out = *req
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	out.Header["Authorization"] = []string{"Bearer " + tok}
	return out
}

// replay is a fresh copy of req's body for a second send; ok is false
// when the body cannot be replayed.
func replay(req *http.Request) (io.ReadCloser, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	return b, true
}

func closeBody(req *http.Request) { closeReadCloser(req.Body) }

func closeReadCloser(rc io.ReadCloser) {
	if rc != nil {
		_ = rc.Close()
	}
}
