package auth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// SPEC Part 3, "Token endpoints": what a hostile or broken token endpoint
// can make a Source do. Issue 19, defects 3, 6, 7, 8 and 11.

// hammer calls s.Token from n goroutines until d has passed.
func hammer(s *Source, n int, d time.Duration) {
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_, _ = s.Token(ctx)
				cancel()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

// Defect 3: expires_in ≤ 0 is a failure, not a token to renew at once
// (expires_in -5 made ~6 000 token requests a second with no traffic).
func TestSourceNonPositiveLifetime(t *testing.T) {
	for _, life := range []int{-5, 0} {
		e := newEndpoint(t, life, 0)
		s := New("api", oauthCfg(e.URL), nil, Timings{})
		tok, err := s.Token(context.Background())
		var ae *Error
		if !errors.As(err, &ae) || !strings.Contains(ae.Detail(), "lifetime") {
			t.Errorf("expires_in %d: token %q, error %v; want a failure naming the lifetime", life, tok, err)
		}
		time.Sleep(2 * time.Second) // no traffic
		idle := e.n.Load()
		hammer(s, 8, 2*time.Second) // traffic: answered from the backoff, 1 s then 2 s
		t.Logf("expires_in %d: %d token requests after 2 s idle, %d after 2 s of traffic", life, idle, e.n.Load())
		if idle > 1 || e.n.Load() > 3 {
			t.Errorf("expires_in %d: %d token requests idle, %d in all; want 1 and at most 3", life, idle, e.n.Load())
		}
		s.Close()
	}
}

// Defect 3: token requests are paced, whatever asks. Never two within
// 1 s: a token that lives 1 s is never valid (a second of slack), so every
// caller would start a request. Failures back off 1 s, 2 s, 4 s… for
// callers without a token, rather than once a second.
func TestSourceTokenRequestPacing(t *testing.T) {
	for _, c := range []struct {
		name   string
		life   int
		fail   int
		during time.Duration
		max    int64
	}{
		{"1 s tokens", 1, 0, 2500 * time.Millisecond, 4},            // at 0, 1 and 2 s
		{"a failing endpoint", 60, 500, 4500 * time.Millisecond, 4}, // at 0, 1 and 3 s
	} {
		e := newEndpoint(t, c.life, 0)
		if c.fail != 0 {
			e.setFail(c.fail, `{"error":"server_error"}`)
		}
		s := New("api", oauthCfg(e.URL), nil, Timings{})
		hammer(s, 8, c.during)
		s.Close()
		t.Logf("%s: %d token requests in %s of traffic", c.name, e.n.Load(), c.during)
		if n := e.n.Load(); n > c.max {
			t.Errorf("%s: %d token requests in %s, want at most %d", c.name, n, c.during, c.max)
		}
	}
}

// Defect 8: a 3xx from token_url is a failure and is not followed: the
// form (client_secret in it with auth_style params) and the Basic header
// reach no other URL, same host or not.
func TestSourceRedirectNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	var seen sync.Mutex
	var leaked []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		b, _ := io.ReadAll(r.Body)
		seen.Lock()
		leaked = append(leaked, string(b)+" "+r.Header.Get("Authorization"))
		seen.Unlock()
	}))
	defer target.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("same") != "" {
			http.Redirect(w, r, "/moved", http.StatusPermanentRedirect)
			return
		}
		http.Redirect(w, r, target.URL+"/steal", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		b, _ := io.ReadAll(r.Body)
		seen.Lock()
		leaked = append(leaked, string(b)+" "+r.Header.Get("Authorization"))
		seen.Unlock()
	})
	ep := httptest.NewServer(mux)
	defer ep.Close()
	for _, c := range []struct{ style, url string }{
		{"params", ep.URL + "/token"},        // to another host
		{"header", ep.URL + "/token?same=1"}, // to the same host
	} {
		cfg := oauthCfg(c.url)
		cfg.AuthStyle = c.style
		s := New("api", cfg, nil, Timings{})
		_, err := s.Token(context.Background())
		s.Close()
		var ae *Error
		if !errors.As(err, &ae) || ae.Status/100 != 3 {
			t.Errorf("%s: %v, want a failure with the 3xx status", c.style, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect targets got %d requests, want none: %q", n, leaked)
	}
}

// Defect 11: only registered OAuth2 error codes are quoted; anything else
// (here the secret, which a hostile endpoint reflects) is "other".
func TestSourceErrorCodeRegistered(t *testing.T) {
	for _, c := range []struct{ code, want string }{
		{"very-secret-value", "other"},
		{"invalid_client", "invalid_client"},
		{"invalid_target", "invalid_target"},
		{"temporarily_unavailable", "temporarily_unavailable"},
	} {
		e := newEndpoint(t, 60, 0)
		e.setFail(400, `{"error":"`+c.code+`"}`)
		s := New("api", oauthCfg(e.URL), nil, Timings{})
		_, err := s.Token(context.Background())
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != c.want {
			t.Errorf("error %q: %v, want code %q", c.code, err, c.want)
			continue
		}
		for _, msg := range []string{ae.Error(), ae.Detail(), s.Status().LastError} {
			if strings.Contains(msg, "very-secret") || !strings.Contains(msg, "("+c.want+")") {
				t.Errorf("message %q: want (%s) and never the secret", msg, c.want)
			}
		}
		s.Close()
	}
}

// Defect 6: the discarded 401 body is drained with a bound; a stalled one
// does not hold the resend (it held it until the upstream gave up).
func TestTransport401StalledBody(t *testing.T) {
	e := newEndpoint(t, 3600, 0)
	s := New("api", oauthCfg(e.URL), nil, Timings{})
	defer s.Close()
	first, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+first {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":`)
			w.(http.Flusher).Flush()
			select { // the rest of the body never comes
			case <-release:
			case <-time.After(10 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer api.Close()
	defer close(release)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: &Transport{Source: s, Next: tr}}
	start := time.Now()
	resp, err := c.Get(api.URL)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("401 with a stalled body: %d %q after %s", resp.StatusCode, b, took.Round(time.Millisecond))
	if resp.StatusCode != 200 || took > 3*time.Second {
		t.Errorf("%d after %s; want 200 from the resend, well before the 10 s stall ends", resp.StatusCode, took)
	}
}

// Defect 7: a persistent 401 forces one renewal per min_renew_interval,
// not one per request; a 401 within it passes through untouched.
func TestTransportMinRenewInterval(t *testing.T) {
	e := newEndpoint(t, 3600, 0)
	cfg := oauthCfg(e.URL)
	cfg.MinRenewInterval = config.Duration(2 * time.Second)
	s := New("api", cfg, nil, Timings{})
	defer s.Close()
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(401)
		_, _ = io.WriteString(w, "revoked")
	}))
	defer api.Close()
	c := &http.Client{Transport: &Transport{Source: s, Next: http.DefaultTransport}}
	get := func() (int, string) {
		resp, err := c.Get(api.URL)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for i := range 50 {
		if st, b := get(); st != 401 || b != "revoked" {
			t.Fatalf("request %d: %d %q, want the upstream's 401", i, st, b)
		}
	}
	t.Logf("50 requests, persistent 401: %d token requests, %d API calls", e.n.Load(), calls.Load())
	if e.n.Load() > 2 || calls.Load() > 52 {
		t.Errorf("%d token requests and %d API calls for 50 requests; want at most 2 and 52", e.n.Load(), calls.Load())
	}
	// Once the interval has passed, a 401 forces a renewal again.
	time.Sleep(2100 * time.Millisecond)
	before := e.n.Load()
	get()
	if n := e.n.Load() - before; n != 1 {
		t.Errorf("after min_renew_interval: %d token requests, want 1", n)
	}
}
