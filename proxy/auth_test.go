package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/breakwater-proxy/breakwater/auth"
	"github.com/breakwater-proxy/breakwater/config"
)

const authYAML = `version: 1
upstreams:
  api:
    url: http://127.0.0.1:1
    auth:
      oauth2:
        token_url: http://127.0.0.1:2/token
        client_id: id
        client_secret: ${SECRET}
routes:
  - { name: r, match: { path_prefix: / }, upstream: api%EXTRA% }
`

func authConfig(t *testing.T, secret, extra string) *config.Config {
	t.Helper()
	lookup := func(string) (string, bool) { return secret, true }
	cfg, _, err := config.Parse("t.yaml", []byte(strings.Replace(authYAML, "%EXTRA%", extra, 1)), lookup, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func liveToken(s *Server) *auth.Source { return s.Live().Upstreams[0].Token }

// A reload with unchanged auth keeps the token source (and its token); a
// rotated client_secret, even of the same length, makes a new one, though
// the config's JSON (secrets [REDACTED]) and hash are the same.
func TestTokenSourceAcrossReloads(t *testing.T) {
	p := startProxy(t, "version: 1\nupstreams: { a: { url: 'http://127.0.0.1:1' } }\nroutes: [{ name: r, match: { path_prefix: / }, upstream: a }]\n", nil)
	s := p.srv
	c1 := authConfig(t, "secret-AAAA", "")
	if err := s.Load(c1); err != nil {
		t.Fatal(err)
	}
	first := liveToken(s)
	if first == nil {
		t.Fatal("no token source for an upstream with auth.oauth2")
	}
	if err := s.Load(authConfig(t, "secret-AAAA", ", timeout: 5s")); err != nil {
		t.Fatal(err)
	}
	if liveToken(s) != first {
		t.Error("a reload that left auth alone made a new token source")
	}
	c2 := authConfig(t, "secret-BBBB", "")
	if c2.Hash != c1.Hash {
		t.Fatalf("hashes differ (%s, %s): the test needs a rotation the config cannot see", c1.Hash, c2.Hash)
	}
	if err := s.Load(c2); err != nil {
		t.Fatal(err)
	}
	if liveToken(s) == first {
		t.Error("a rotated client_secret kept the old token source")
	}
	if err := s.Load(authConfig(t, "secret-rotated-longer", "")); err != nil {
		t.Fatal(err)
	}
	if liveToken(s) == nil {
		t.Fatal("lost the token source")
	}
}

// No token: 502 upstream_auth_failed naming the upstream, nothing sent
// upstream, no breaker counts it.
func TestUpstreamAuthFailedKind(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { t.Error("the upstream was called without a token") })
	tokenURL := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
	}).URL
	p := startProxy(t, `version: 1
upstreams:
  api:
    url: {{UP}}
    circuit_breaker: { failure_threshold: 2 }
    auth: { oauth2: { token_url: {{TOK}}/token, client_id: id, client_secret: s3cret-value } }
routes:
  - { name: r, match: { path_prefix: / }, upstream: api }
`, map[string]string{"UP": up.URL, "TOK": tokenURL})
	for range 5 {
		resp, body := do(t, p.Client(), mustRequest(t, "GET", p.URL+"/x"))
		if resp.StatusCode != 502 || resp.Header.Get("X-Breakwater-Error") != "upstream_auth_failed" ||
			!strings.Contains(string(body), `\"api\"`) || !strings.Contains(string(body), "400 (invalid_client)") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	for _, b := range p.srv.Live().Breakers {
		if b.State() != "closed" {
			t.Errorf("breaker %s is %s after token failures", b.Name, b.State())
		}
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
