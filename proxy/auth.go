package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
)

// tokenKey is a token source's registry settings: a fingerprint of the
// whole auth.oauth2 block, secrets included (auth.Keyer), so that a reload
// with unchanged auth keeps the current token and one with a rotated
// client_secret gets a new source. It lives in the registry's memory only.
type tokenKey struct{ Key string }

// tokenSource is upstream name's token source, carried across reloads;
// nil when the upstream has no auth.oauth2.
func (s *Server) tokenSource(reg *lifecycle.Registry, name string, u *config.Upstream) *auth.Source {
	if u.Auth == nil || u.Auth.OAuth2 == nil {
		return nil
	}
	o := u.Auth.OAuth2
	return lifecycle.Get(reg, "token", name, tokenKey{s.keyer.Key(o)}, func() renewedSource {
		return renewedSource{auth.New(name, o, s.metrics, auth.Timings{})}
	}).Source
}

// renewedSource is a token source as the registry owns it: one that no
// config uses any more (a rotated secret, a removed upstream) stops
// renewing, and its request in flight is waited for.
type renewedSource struct{ *auth.Source }

func (s renewedSource) Close(ctx context.Context) error {
	s.Source.Close()
	return s.Wait(ctx)
}

// withAuth puts an upstream's credentials in front of a route's pipeline.
//
// Why above the pipeline rather than around the base transport
// (transport.NewBase): the retry after a 401 must be an attempt like any
// other — it spends the upstream's quota, asks the breaker, holds a
// bulkhead slot and is counted in upstream_attempts_total — and only the
// pipeline does all that; a wrapper below it would send the second request
// behind the quota's back. The pipeline keeps one clock for both sends
// (the request's trace deadline), so the retry does not extend the route
// timeout. A request that gets no token never enters the pipeline, so
// neither the breaker nor the quota sees it: the upstream API did not
// fail (see KindUpstreamAuthFailed).
func withAuth(src *auth.Source, pipeline http.RoundTripper) http.RoundTripper {
	if src == nil {
		return pipeline
	}
	return &auth.Transport{Source: src, Next: pipeline, Deadline: routeDeadline}
}

// replayLimit is how much of a request body with this method the route
// buffers for replay: what its retries need (the pipeline decides), and
// on an upstream with auth.oauth2 at least the replay limit whatever the
// method, since the resend after a 401 happens whatever retry says (SPEC
// Part 3): a revoked token would otherwise answer a POST on a route
// without retry with the upstream's 401. Buffering alone repeats nothing:
// the pipeline still retries only what retry allows.
func (rt *route) replayLimit(method string) int64 {
	return max(rt.pipeline.ReplayLimit(method), rt.authReplay)
}

// routeDeadline is the request's route timeout: waiting for a token is
// part of the request's one clock.
func routeDeadline(r *http.Request) time.Time {
	if rq := requestFrom(r.Context()); rq != nil {
		return rq.deadline
	}
	return time.Time{}
}

// tokens lists the running table's token sources, for metrics.
func (s *Server) tokens() []*auth.Source {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	out := make([]*auth.Source, 0, len(t.upstreams))
	for _, name := range t.upstreamNames() {
		if src := t.upstreams[name].token; src != nil {
			out = append(out, src)
		}
	}
	return out
}

// TokenObserver is the part of Observer that follows upstream tokens
// (observe.Metrics implements it): token requests as they happen, and the
// sources, read at scrape time.
type TokenObserver interface {
	auth.Observer
	FollowTokens(list func() []*auth.Source)
}

// authDetail is the message of an upstream_auth_failed answer: which
// upstream and what its token endpoint said; "" for the kind's default.
func authDetail(err error) string {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return ae.Detail()
	}
	return ""
}
