package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
)

// provider is a real OAuth2 server (github.com/go-oauth2/oauth2/v4) in the
// test process, and an API that accepts only its tokens.
type provider struct {
	mgr     *manage.Manager
	clients *store.ClientStore
	srv     *server.Server
	Token   *httptest.Server // /token, /authorize
	API     *httptest.Server // 200 with a valid bearer token, 401 otherwise

	TokenRequests atomic.Int64
	APIRequests   atomic.Int64
	Down          atomic.Bool // the token endpoint answers 503

	mu       sync.Mutex
	seen     map[string]bool // every access token the API was sent
	last     string          // the last one
	issued   []string        // every access token the token endpoint issued
	secrets  []string        // client secrets the token endpoint was sent
	audience []string        // the audience params it was sent
	apiKeys  []string        // X-Api-Key values the API was sent
}

func newProvider(t *testing.T, clientID, secret string, life time.Duration) *provider {
	p := &provider{seen: map[string]bool{}}
	p.mgr = manage.NewDefaultManager()
	p.mgr.SetClientTokenCfg(&manage.Config{AccessTokenExp: life})
	p.mgr.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: life, RefreshTokenExp: time.Hour, IsGenerateRefresh: true})
	p.mgr.SetRefreshTokenCfg(&manage.RefreshingConfig{AccessTokenExp: life, RefreshTokenExp: time.Hour, IsGenerateRefresh: true, IsRemoveAccess: false, IsRemoveRefreshing: true})
	p.mgr.MustTokenStorage(store.NewMemoryTokenStore())
	p.clients = store.NewClientStore()
	p.SetSecret(clientID, secret)
	p.mgr.MapClientStorage(p.clients)
	p.srv = server.NewDefaultServer(p.mgr)
	p.srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) { return "alice", nil })
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		p.TokenRequests.Add(1)
		if p.Down.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"temporarily_unavailable","error_description":"echo of bw-client"}`)
			return
		}
		_, sec, _ := r.BasicAuth()
		_ = r.ParseForm()
		p.mu.Lock()
		p.secrets = append(p.secrets, sec)
		p.audience = append(p.audience, r.PostForm.Get("audience"))
		p.mu.Unlock()
		rec := &teeWriter{ResponseWriter: w}
		_ = p.srv.HandleTokenRequest(rec, r)
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.body.Bytes(), &tok) == nil && tok.AccessToken != "" {
			p.mu.Lock()
			p.issued = append(p.issued, tok.AccessToken)
			p.mu.Unlock()
		}
	})
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := p.srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	p.Token = httptest.NewServer(mux)
	t.Cleanup(p.Token.Close)
	p.API = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.APIRequests.Add(1)
		ti, err := p.srv.ValidationBearerToken(r)
		tok := ""
		if h := r.Header.Get("Authorization"); len(h) > 7 {
			tok = h[7:]
		}
		p.mu.Lock()
		p.seen[tok], p.last = true, tok
		p.apiKeys = append(p.apiKeys, r.Header.Get("X-Api-Key"))
		p.mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Client", ti.GetClientID())
		body := make([]byte, 0, 256)
		buf := make([]byte, 256)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(p.API.Close)
	return p
}

// SetSecret registers (or rotates) a client's secret.
func (p *provider) SetSecret(clientID, secret string) {
	_ = p.clients.Set(clientID, &models.Client{ID: clientID, Secret: secret, Domain: "http://127.0.0.1"})
}

// teeWriter keeps a copy of what a handler writes.
type teeWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// RevokeAll voids every access token issued so far, the one breakwater
// holds included, whether or not the API has seen it yet.
func (p *provider) RevokeAll(t *testing.T) map[string]bool {
	p.mu.Lock()
	toks := append([]string(nil), p.issued...)
	p.mu.Unlock()
	revoked := map[string]bool{}
	for _, tok := range toks {
		if err := p.mgr.RemoveAccessToken(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		revoked[tok] = true
	}
	return revoked
}

// Revoke voids the last access token the API saw.
func (p *provider) Revoke(t *testing.T) string {
	p.mu.Lock()
	tok := p.last
	p.mu.Unlock()
	if err := p.mgr.RemoveAccessToken(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// Tokens are every access token the API was sent.
func (p *provider) Tokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k := range p.seen {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

func (p *provider) lastSecret() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.secrets) == 0 {
		return ""
	}
	return p.secrets[len(p.secrets)-1]
}

func (p *provider) lastAPIKey() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.apiKeys) == 0 {
		return ""
	}
	return p.apiKeys[len(p.apiKeys)-1]
}

// SetClient registers a client whose redirect URIs must be on domain.
func (p *provider) SetClient(clientID, secret, domain string) {
	_ = p.clients.Set(clientID, &models.Client{ID: clientID, Secret: secret, Domain: domain})
}
