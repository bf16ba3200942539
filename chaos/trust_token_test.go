package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// The abuse suite's hostile token endpoint (issue 19, "Trust"): each test
// drives the binary in front of a token endpoint and an upstream that
// misbehave, and asserts SPEC Part 3, "Token endpoints" and "Every step
// under the route's clock". The token endpoint issues "tok-N" (N the
// request's number), so that an upstream can refuse the first token.

const trustSecret = "trust-client-secret-7Qx"

// issue answers a token request with tok-n living life seconds.
func issue(w http.ResponseWriter, n int64, life int) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("tok-%d", n), "token_type": "Bearer", "expires_in": life})
}

// tokenConfig is one upstream (api, at up) with auth.oauth2 against
// tokenURL, and one route to it; route holds extra route keys (four
// spaces) and oauth2 extra auth.oauth2 keys (eight spaces).
func tokenConfig(up, tokenURL, oauth2, route string) string {
	return `
upstreams:
  api:
    url: "` + up + `"
    auth:
      oauth2:
        token_url: "` + tokenURL + `"
        client_id: bw
        client_secret: ` + trustSecret + `
` + oauth2 + `
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
` + route
}

// Defect 3: expires_in -5 is a failure; it started an endless token loop
// (one client request, then ~6 000 token requests a second with no
// traffic).
func TestTrustTokenNegativeLifetime(t *testing.T) {
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, -5) })
	up := testkit.NewUpstream(t, func(int64, http.ResponseWriter, *http.Request) {})
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", ""))
	a := get(client(10*time.Second), b.URL+"/x")
	time.Sleep(3 * time.Second) // no traffic
	n := tok.Hits.Load()
	t.Logf("expires_in -5: %d %s, then %d token requests in 3 s without traffic; %d upstream requests", a.status, a.kind, n, up.Hits.Load())
	if a.status != 502 || a.kind != "upstream_auth_failed" || up.Hits.Load() != 0 {
		t.Errorf("answer %d %s with %d upstream requests, want 502 upstream_auth_failed and none", a.status, a.kind, up.Hits.Load())
	}
	if n > 3 {
		t.Errorf("%d token requests in 3 s after one client request, want at most 3", n)
	}
	if !strings.Contains(string(a.body), "lifetime") {
		t.Errorf("body %s: want the reason (no positive lifetime)", a.body)
	}
}

// refuseStalled is an upstream that answers tok-1 on path (every path for
// "/") with a 401 whose body stalls for 20 s or until release is closed,
// and any other token with 200 "fresh".
func refuseStalled(path string, release <-chan struct{}) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, r *http.Request) {
		if (path == "/" || r.URL.Path == path) && r.Header.Get("Authorization") == "Bearer tok-1" {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":`)
			w.(http.Flusher).Flush()
			select { // the rest never comes
			case <-release:
			case <-time.After(20 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "fresh")
	}
}

// Defect 6: a 401 whose body stalls is discarded under the route's clock
// (timeout 4s): the renewal and resend go ahead at once. It was answered
// when the stall ended, 502 upstream_auth_failed blaming the token
// endpoint, which had answered at once.
func TestTrustToken401StalledBody(t *testing.T) {
	release := make(chan struct{})
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, 3600) })
	up := testkit.NewUpstream(t, refuseStalled("/", release))
	defer close(release)
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", "    timeout: 4s\n"))
	a := get(client(30*time.Second), b.URL+"/x")
	t.Logf("401 with a stalled body, timeout 4s: %d %s %q after %s; %d token requests, %d upstream requests",
		a.status, a.kind, a.body, a.elapsed.Round(time.Millisecond), tok.Hits.Load(), up.Hits.Load())
	if a.status != 200 || string(a.body) != "fresh" || a.elapsed > 3*time.Second {
		t.Errorf("%d %s after %s, want 200 from the resend within the 4 s timeout (the stall lasts 20 s)", a.status, a.kind, a.elapsed)
	}
}

// Defect 7: a persistent 401 forces a renewal once per
// min_renew_interval (10s), not once per request (50 requests made 50
// token requests and 100 upstream calls).
func TestTrustTokenPersistent401(t *testing.T) {
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, 3600) })
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, "revoked")
	})
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", ""))
	c := client(10 * time.Second)
	statuses := map[int]int{}
	for range 50 {
		statuses[get(c, b.URL+"/x").status]++
	}
	t.Logf("50 requests, persistent 401: statuses %v, %d token requests, %d upstream requests", statuses, tok.Hits.Load(), up.Hits.Load())
	if statuses[401] != 50 {
		t.Errorf("statuses %v, want the upstream's 401 fifty times", statuses)
	}
	if tok.Hits.Load() > 2 || up.Hits.Load() > 52 {
		t.Errorf("%d token requests and %d upstream requests, want at most 2 and 52", tok.Hits.Load(), up.Hits.Load())
	}
}

// Defect 8: a redirect from token_url is a failure, never followed: the
// redirect target receives nothing, neither the form with client_secret
// (auth_style params, to another host) nor the Basic header (same host).
func TestTrustTokenRedirect(t *testing.T) {
	var mu sync.Mutex
	var got []string // what the redirect targets received
	steal := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		mu.Unlock()
		issue(w, 1, 3600)
	}
	other := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) { steal(w, r) })
	tok := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token-away":
			http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
		case "/token-here":
			http.Redirect(w, r, "/moved", http.StatusPermanentRedirect)
		default:
			steal(w, r)
		}
	})
	up := testkit.NewUpstream(t, func(int64, http.ResponseWriter, *http.Request) {})
	for _, c := range []struct{ name, path, style string }{
		{"307 to another host, auth_style params", "/token-away", "params"},
		{"308 to the same host, auth_style header", "/token-here", "header"},
	} {
		b := startBW(t, tokenConfig(up.URL, tok.URL+c.path, "        auth_style: "+c.style+"\n", ""))
		a := get(client(10*time.Second), b.URL+"/x")
		t.Logf("%s: %d %s %s", c.name, a.status, a.kind, a.body)
		if a.status != 502 || a.kind != "upstream_auth_failed" || up.Hits.Load() != 0 {
			t.Errorf("%s: %d %s, %d upstream requests; want 502 upstream_auth_failed and none", c.name, a.status, a.kind, up.Hits.Load())
		}
		if strings.Contains(string(a.body), trustSecret) {
			t.Errorf("%s: the answer shows the secret", c.name)
		}
		b.Kill()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Errorf("the redirect targets received %d requests, want none: %q", len(got), got)
	}
}

// Defect 11: only a registered OAuth2 error code is quoted in a 502 body;
// an endpoint that reflects the secret in `error` was quoted verbatim.
func TestTrustTokenErrorCode(t *testing.T) {
	tok := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		if r.URL.Path == "/registered" {
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		_, _ = io.WriteString(w, `{"error":"`+trustSecret+`"}`) // reflected
	})
	up := testkit.NewUpstream(t, func(int64, http.ResponseWriter, *http.Request) {})
	for _, c := range []struct{ path, want string }{{"/reflect", "(other)"}, {"/registered", "(invalid_client)"}} {
		b := startBW(t, tokenConfig(up.URL, tok.URL+c.path, "", ""))
		a := get(client(10*time.Second), b.URL+"/x")
		health := get(client(10*time.Second), b.Admin+"/health")
		t.Logf("%s: %d %s %s", c.path, a.status, a.kind, a.body)
		if a.status != 502 || !strings.Contains(string(a.body), c.want) {
			t.Errorf("%s: %d %s, want 502 quoting %s", c.path, a.status, a.body, c.want)
		}
		for _, s := range []string{string(a.body), string(health.body), b.Out.String()} {
			if strings.Contains(s, trustSecret) {
				t.Errorf("%s: the secret shows in %.200s", c.path, s)
			}
		}
		b.Kill()
	}
}

// Defect 18: the resend after a 401 is an attempt in the access log (it
// said attempts=1 while the upstream saw 2) as in metrics. The resend
// gets a 503 so that the access line is a warning (startBW logs at warn).
func TestTrustToken401Attempts(t *testing.T) {
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, 3600) })
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(503)
	})
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", "    retry: off\n"))
	a := get(client(10*time.Second), b.URL+"/x")
	var attempts = -1
	b.WaitFor(t, 5*time.Second, "the access log line", func() bool {
		sc := bufio.NewScanner(strings.NewReader(b.Out.String()))
		for sc.Scan() {
			var l struct {
				Path     string
				Attempts *int
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Path == "/x" && l.Attempts != nil {
				attempts = *l.Attempts
				return true
			}
		}
		return false
	})
	m := b.metric("breakwater_upstream_attempts_total", `upstream="api"`)
	t.Logf("401 then 503: %d; upstream saw %d requests, access log attempts=%d, upstream_attempts_total %v", a.status, up.Hits.Load(), attempts, m)
	if a.status != 503 || up.Hits.Load() != 2 {
		t.Fatalf("%d after %d upstream requests, want 503 after 2", a.status, up.Hits.Load())
	}
	if attempts != 2 || m != 2 {
		t.Errorf("access log attempts=%d, metric %v; want 2 (the 401 resend is an attempt)", attempts, m)
	}
}

// Defect 20: a POST whose token was revoked is resent with a fresh token
// whatever retry says: on an upstream with auth.oauth2 the body is kept
// for the 401 resend up to the replay limit (retry.max_body's default),
// also with retry: off. It got the 401.
func TestTrustTokenPOSTAfterRevoke(t *testing.T) {
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, 3600) })
	var mu sync.Mutex
	var bodies []int // the body length each upstream request carried
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, len(body))
		mu.Unlock()
		if r.Header.Get("Authorization") == "Bearer tok-1" {
			w.WriteHeader(401)
			return
		}
		_, _ = w.Write(body)
	})
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", "    retry: off\n"))
	payload := string(bytes.Repeat([]byte("p"), 4<<10))
	resp, err := client(10*time.Second).Post(b.URL+"/orders", "application/octet-stream", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("4 KiB POST, retry off, revoked token: %d, %d bytes back; upstream bodies %v", resp.StatusCode, len(back), bodies)
	if resp.StatusCode != 200 || string(back) != payload {
		t.Errorf("%d, want 200 with the body, resent with a fresh token", resp.StatusCode)
	}
	if len(bodies) != 2 || bodies[0] != 4<<10 || bodies[1] != 4<<10 {
		t.Errorf("upstream bodies %v, want the whole body twice", bodies)
	}
}

// Defect 6, the other side: the 401's body is discarded in the
// background, but the resend still waits for it to let go (at most the
// 100 ms drain) of the slots the first send holds: with one bulkhead slot
// and no wait, the resend found it taken (503 bulkhead_full).
func TestTrustToken401StalledBodyFreesSlot(t *testing.T) {
	release := make(chan struct{})
	tok := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) { issue(w, n, 3600) })
	up := testkit.NewUpstream(t, refuseStalled("/x", release))
	defer close(release)
	b := startBW(t, tokenConfig(up.URL, tok.URL, "", "    timeout: 4s\n    bulkhead: { max_concurrent: 1, max_wait: 0s }\n"))
	c := client(30 * time.Second)
	if a := get(c, b.URL+"/warm"); a.status != 200 { // tok-1 is fetched and accepted here
		t.Fatalf("warm-up: %d %s", a.status, a.kind)
	}
	time.Sleep(1100 * time.Millisecond) // so that the forced renewal needs no spacing
	a := get(c, b.URL+"/x")
	t.Logf("401 with a stalled body, one bulkhead slot: %d %s %q after %s", a.status, a.kind, a.body, a.elapsed.Round(time.Millisecond))
	if a.status != 200 || string(a.body) != "fresh" || a.elapsed > 3*time.Second {
		t.Errorf("%d %s after %s, want 200 from the resend", a.status, a.kind, a.elapsed)
	}
}
