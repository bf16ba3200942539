package auth

import (
	"context"
	"encoding/json"
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

// endpoint is a token endpoint: each answer is a new token "tok-N" living
// life, or fail's status and body when fail is set.
type endpoint struct {
	*httptest.Server
	n     atomic.Int64
	delay time.Duration
	life  int // expires_in seconds
	mu    sync.Mutex
	fail  int    // status to fail with; 0 = succeed
	body  string // the failure's body
}

func newEndpoint(t *testing.T, life int, delay time.Duration) *endpoint {
	e := &endpoint{life: life, delay: delay}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := e.n.Add(1)
		time.Sleep(e.delay)
		e.mu.Lock()
		fail, body := e.fail, e.body
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if fail != 0 {
			w.WriteHeader(fail)
			_, _ = io.WriteString(w, body)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + string(rune('a'+n%26)) + time.Now().Format("150405.000000"),
			"token_type": "Bearer", "expires_in": e.life})
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) setFail(status int, body string) {
	e.mu.Lock()
	e.fail, e.body = status, body
	e.mu.Unlock()
}

func oauthCfg(url string) *config.OAuth2 {
	return &config.OAuth2{TokenURL: url, Grant: config.GrantClientCredentials, ClientID: "id",
		ClientSecret: config.NewSecret("very-secret-value"), AuthStyle: "header", RefreshBefore: config.Duration(time.Minute)}
}

// Many callers at once, no token yet: one token request.
func TestSourceOneRequestForManyCallers(t *testing.T) {
	e := newEndpoint(t, 60, 100*time.Millisecond)
	s := New("api", oauthCfg(e.URL), nil, Timings{})
	defer s.Close()
	var wg sync.WaitGroup
	toks := make([]string, 50)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := s.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		}()
	}
	wg.Wait()
	if n := e.n.Load(); n != 1 {
		t.Errorf("%d token requests for 50 concurrent callers, want 1", n)
	}
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
}

// A renewal that fails keeps the current token while it is valid, and is
// retried with backoff (not once per caller); the first success replaces it.
func TestSourceKeepsValidTokenWhileRenewalFails(t *testing.T) {
	e := newEndpoint(t, 4, 0) // renewed after 2 s (half its life)
	s := New("api", oauthCfg(e.URL), nil, Timings{RetryMin: 200 * time.Millisecond, RetryMax: 400 * time.Millisecond})
	defer s.Close()
	first, err := s.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.setFail(503, `{"error":"temporarily_unavailable"}`)
	deadline := time.Now().Add(2800 * time.Millisecond) // the token is valid until ~4 s
	for time.Now().Before(deadline) {
		tok, err := s.Token(context.Background())
		if err != nil || tok != first {
			t.Fatalf("while renewal fails: %q %v, want the current token", tok, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.n.Load(); n < 2 || n > 6 {
		t.Errorf("%d token requests: want a few renewal retries with backoff", n)
	}
	if st := s.Status(); !strings.Contains(st.LastError, "503") {
		t.Errorf("status %+v: want the failure", st)
	}
	e.setFail(0, "")
	deadline = time.Now().Add(5 * time.Second)
	for {
		tok, err := s.Token(context.Background())
		if err == nil && tok != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new token after the endpoint recovered: %q %v", tok, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Concurrent forced renewals of the same refused token make one request,
// and a caller whose stale token was already replaced gets the new one.
func TestSourceRenewOnce(t *testing.T) {
	e := newEndpoint(t, 3600, 50*time.Millisecond)
	s := New("api", oauthCfg(e.URL), nil, Timings{})
	defer s.Close()
	stale, _ := s.Token(context.Background())
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := s.Renew(context.Background(), stale)
			if err != nil || tok == stale {
				t.Errorf("renew: %q %v", tok, err)
			}
		}()
	}
	wg.Wait()
	if n := e.n.Load(); n != 2 {
		t.Errorf("%d token requests, want 2 (first + one forced renewal)", n)
	}
}

// What a failure says: status and OAuth2 error code, never the body
// (which may echo the secret), never the secret.
func TestSourceErrorNeverQuotesBody(t *testing.T) {
	e := newEndpoint(t, 60, 0)
	e.setFail(401, `{"error":"invalid_client","error_description":"bad secret very-secret-value"}`)
	s := New("api", oauthCfg(e.URL), nil, Timings{})
	defer s.Close()
	_, err := s.Token(context.Background())
	var ae *Error
	if !errors.As(err, &ae) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("error %v: want *Error matching ErrUnavailable", err)
	}
	for _, msg := range []string{err.Error(), ae.Detail(), s.Status().LastError} {
		if !strings.Contains(msg, "401") || !strings.Contains(msg, "invalid_client") || !strings.Contains(msg, `api`) {
			t.Errorf("message %q: want the upstream, 401 and invalid_client", msg)
		}
		if strings.Contains(msg, "very-secret") || strings.Contains(msg, "bad secret") {
			t.Errorf("message %q quotes the body or the secret", msg)
		}
	}
	if ae.Transient() {
		t.Error("a refused credential is not transient")
	}
	// Right after a failure, callers are answered at once: no request each.
	before := e.n.Load()
	for range 10 {
		_, _ = s.Token(context.Background())
	}
	if e.n.Load() != before {
		t.Errorf("%d token requests within the fail-fast second, want 0", e.n.Load()-before)
	}
}

// An unreachable endpoint is named as such.
func TestSourceUnreachable(t *testing.T) {
	e := newEndpoint(t, 60, 0)
	url := e.URL
	e.Close()
	s := New("api", oauthCfg(url), nil, Timings{})
	defer s.Close()
	_, err := s.Token(context.Background())
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 0 || !strings.Contains(ae.Detail(), "could not be reached") || !ae.Transient() {
		t.Errorf("error %v", err)
	}
}
