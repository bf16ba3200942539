package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
)

// tokenKey is a token source's registry settings: a fingerprint of the
// whole auth.oauth2 block, secrets included (auth.Keyer), so that a reload
// with unchanged auth keeps the current token and one with a rotated
// client_secret gets a new source. It lives in the registry's memory only.
type tokenKey struct{ Key string }

// tokenSource is upstream name's token source, carried across reloads;
// nil when the upstream has no auth.oauth2.
func (s *Server) tokenSource(reg *policy.Registry, name string, u *config.Upstream) *auth.Source {
	if u.Auth == nil || u.Auth.OAuth2 == nil {
		return nil
	}
	o := u.Auth.OAuth2
	return policy.Get(reg, "token", name, tokenKey{s.keyer.Key(o)}, func() *auth.Source {
		return auth.New(name, o, s.metrics, auth.Timings{})
	})
}

// withAuth puts an upstream's credentials in front of a route's pipeline.
//
// Why above the pipeline rather than around the base transport
// (newBaseTransport): the retry after a 401 must be an attempt like any
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

// routeDeadline is the request's route timeout: waiting for a token is
// part of the request's one clock.
func routeDeadline(r *http.Request) time.Time {
	if rq := requestFrom(r.Context()); rq != nil {
		return rq.deadline
	}
	return time.Time{}
}

// closeDropped stops the background renewal of the token sources that
// old had and t no longer has (a rotated secret, a removed upstream).
func closeDropped(old, t *table) {
	for src := range old.tokens {
		if !t.tokens[src] {
			src.Close()
		}
	}
}

// tokens lists the running table's token sources, for metrics.
func (s *Server) tokens() []*auth.Source {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	out := make([]*auth.Source, 0, len(t.tokens))
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
