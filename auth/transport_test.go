package auth

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The API: 401 unless the bearer token is the current "good" one.
func TestTransport401(t *testing.T) {
	e := newEndpoint(t, 3600, 0)
	s := New("api", oauthCfg(e.URL), nil, Timings{})
	defer s.Close()
	var good atomic.Value
	good.Store("")
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer "+good.Load().(string) {
			w.WriteHeader(401)
			return
		}
		_, _ = w.Write(b)
	}))
	defer api.Close()
	c := &http.Client{Transport: &Transport{Source: s, Next: http.DefaultTransport}}
	post := func(replayable bool) (*http.Response, string) {
		req, _ := http.NewRequest("POST", api.URL, strings.NewReader("hello"))
		if !replayable {
			req.GetBody = nil
		}
		req.Header.Set("Authorization", "Bearer client's")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	tok, _ := s.Token(context.Background())
	good.Store(tok)
	if resp, body := post(true); resp.StatusCode != 200 || body != "hello" || calls.Load() != 1 {
		t.Fatalf("valid token: %d %q after %d calls", resp.StatusCode, body, calls.Load())
	}

	// Revoked: one forced renewal, one retry with the body replayed.
	calls.Store(0)
	before := e.n.Load()
	// The next token the endpoint issues is the good one: accept any
	// token but the revoked one.
	revoked := tok
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") == "Bearer "+revoked {
			w.WriteHeader(401)
			return
		}
		_, _ = w.Write(b)
	})
	if resp, body := post(true); resp.StatusCode != 200 || body != "hello" || calls.Load() != 2 || e.n.Load()-before != 1 {
		t.Errorf("revoked token: %d %q, %d calls, %d token requests; want 200 after 2 calls and 1 renewal", resp.StatusCode, body, calls.Load(), e.n.Load()-before)
	}

	// Always 401, within min_renew_interval of that renewal: the 401
	// passes through, no token request (the second 401 of a resend passing
	// through: TestTransportMinRenewInterval).
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); w.WriteHeader(401) })
	calls.Store(0)
	before = e.n.Load()
	if resp, _ := post(true); resp.StatusCode != 401 || calls.Load() != 1 || e.n.Load() != before {
		t.Errorf("401 again: %d after %d calls and %d token requests, want 401 after 1 and none", resp.StatusCode, calls.Load(), e.n.Load()-before)
	}
	// A body that cannot be replayed: the first 401 passes through.
	calls.Store(0)
	if resp, _ := post(false); resp.StatusCode != 401 || calls.Load() != 1 {
		t.Errorf("unreplayable body: %d after %d calls, want 401 after 1", resp.StatusCode, calls.Load())
	}
}
