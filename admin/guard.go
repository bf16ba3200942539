package admin

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/breakwater-proxy/breakwater/config"
)

// The admin listener's gate (SPEC.md, "Admin listener" and "Admin
// hardening"). A web page in a local browser can send requests to a
// loopback port, and a DNS-rebinding page can even read the answers, so
// a loopback address alone protects nothing:
//
//   - while the listener is bound on loopback, a request must name a
//     loopback host (a rebinding page's requests carry its own name);
//   - a change (POST) whose Origin is not the listener's own is refused,
//     token or not (a page's cross-site form or fetch carries its origin);
//   - beyond loopback every change needs the token; without one in the
//     running config, changes are refused.
//
// Every rule follows the address actually bound: a reload cannot move the
// listener, so it cannot relax the rules either (ReloadCheck).

// ServeHTTP applies the gate, then routes. Refusals are JSON errors: 403
// for a foreign Host or Origin, 405 (with Allow) for a method an endpoint
// does not take, token or not, and 401 for a change without the token.
// Only a request that would reach a handler is asked for credentials.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.loopback && !config.IsLoopback(r.Host) {
		h.writeJSON(w, http.StatusForbidden, errorBody{"this admin listener is on loopback: the request must be for a loopback host name or address (Host)"})
		return
	}
	if mutating(r.Method) && !sameOrigin(r) {
		h.writeJSON(w, http.StatusForbidden, errorBody{"admin changes from another origin are refused (Origin)"})
		return
	}
	if _, pattern := h.postOnly.Handler(r); pattern != "" && r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.writeJSON(w, http.StatusMethodNotAllowed, errorBody{"this endpoint takes POST only"})
		return
	}
	if _, pattern := h.mux.Handler(r); pattern != "" && mutating(r.Method) {
		var token string
		if cfg := h.proxy.Config(); cfg != nil && !cfg.Admin.Token.IsZero() {
			token = cfg.Admin.Token.Reveal()
		}
		switch {
		case token != "":
			if !validToken(r, token) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="breakwater admin"`)
				h.writeJSON(w, http.StatusUnauthorized, errorBody{"a bearer token is required for admin changes"})
				return
			}
		case !h.loopback:
			h.writeJSON(w, http.StatusForbidden, errorBody{"admin changes are refused: the admin listener is bound beyond loopback and the running config has no admin.token"})
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// ActionsAllowed reports whether admin changes can succeed at all: on a
// loopback listener, or beyond it with an admin.token in the running
// config. The dashboard offers its actions only then.
func (h *Handler) ActionsAllowed() bool { return h.loopback || h.TokenRequired() }

// TokenRequired reports whether admin changes need the bearer token (the
// running config has an admin.token).
func (h *Handler) TokenRequired() bool {
	cfg := h.proxy.Config()
	return cfg != nil && !cfg.Admin.Token.IsZero()
}

// ReloadCheck is the reload.Reloader Check for an admin listener bound at
// bound: beyond loopback, a new file must keep admin.allow_remote and an
// admin.token, since the socket stays where it is until a restart. nil
// (no check) on loopback.
func ReloadCheck(bound net.Addr) func(*config.Config) []config.Problem {
	if boundOnLoopback(bound) {
		return nil
	}
	where := "an unknown address"
	if bound != nil {
		where = bound.String()
	}
	return func(cfg *config.Config) []config.Problem {
		var ps []config.Problem
		refuse := func(path, what string) {
			ps = append(ps, config.Problem{File: cfg.File, Line: cfg.Line(path), Path: path,
				Msg: fmt.Sprintf("the admin listener stays bound to %s, beyond loopback, until a restart: a reload cannot %s", where, what)})
		}
		if cfg.Admin.Token.IsZero() {
			refuse("admin.token", "remove the token")
		}
		if !cfg.Admin.AllowRemote {
			refuse("admin.allow_remote", "turn allow_remote off")
		}
		return ps
	}
}

func mutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// validToken compares in constant time. The scheme is case-insensitive
// (RFC 9110 §11.1): "bearer", "BEARER" and "Bearer" are one scheme.
func validToken(r *http.Request, token string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

// sameOrigin is false when the request carries an Origin other than the
// admin listener's own, "http://" + Host ("null", from a sandboxed or
// file: page, included). No Origin (curl, scripts) is not a browser's
// cross-site request.
func sameOrigin(r *http.Request) bool {
	origins, sent := r.Header["Origin"]
	if !sent {
		return true
	}
	if len(origins) != 1 || r.Host == "" {
		return false
	}
	// A browser leaves the default port out of both; a hand-made request
	// may not.
	norm := func(hostport string) string { return strings.TrimSuffix(hostport, ":80") }
	origin, ok := strings.CutPrefix(strings.ToLower(origins[0]), "http://")
	return ok && norm(origin) == norm(strings.ToLower(r.Host))
}

// boundOnLoopback reports whether the listener's address is a loopback
// one; nil (unknown) is not.
func boundOnLoopback(a net.Addr) bool { return a != nil && config.IsLoopback(a.String()) }
