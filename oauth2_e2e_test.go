package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

const oauth2Config = `version: 1
listen: 127.0.0.1:0
admin: { listen: localhost:0 }
upstreams:
  crm:
    url: %API%
    headers:
      set: { X-Api-Key: "${file:%DIR%/apikey}" }
    auth:
      oauth2:
        token_url: %TOKEN%/token
        client_id: bw-client
        client_secret: ${file:%DIR%/secret}
        scopes: [read]
        params: { audience: "https://crm.example.com" }
        min_renew_interval: 1s
routes:
  - name: crm
    match: { path_prefix: / }
    upstream: crm
`

// TestOAuth2E2E is the seed case of issue 13, against a real OAuth2 server
// library and the built binary: tokens that live 2 s under 6 s of steady
// traffic, a revoked token, the token endpoint down, and a rotated
// ${file:…} secret — and no token or secret anywhere it must not be.
func TestOAuth2E2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const secret1, secret2 = "client-secret-ONE-4f9a", "client-secret-TWO-rotated-77"
	const key1, key2 = "api-key-first-9d2c", "api-key-second-1b7e"
	prov := newProvider(t, "bw-client", secret1, 2*time.Second)
	dir := t.TempDir()
	writeFile(t, dir, "secret", secret1+"\n")
	writeFile(t, dir, "apikey", key1+"\n")
	file := writeFile(t, dir, "breakwater.yaml", strings.NewReplacer("%API%", prov.API.URL, "%TOKEN%", prov.Token.URL, "%DIR%", dir).Replace(oauth2Config))

	cmd := exec.Command(binary, "-config", file)
	cmd.Env = env()
	p := testkit.Start(t, cmd)
	data, admin := p.WaitStarted(t, 15*time.Second)
	client := &http.Client{Timeout: 10 * time.Second}

	// Every /events message, to check that none holds a token.
	var events strings.Builder
	var evMu sync.Mutex
	evResp, err := http.Get("http://" + admin + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer evResp.Body.Close()
	go func() {
		sc := bufio.NewScanner(evResp.Body)
		for sc.Scan() {
			evMu.Lock()
			events.WriteString(sc.Text() + "\n")
			evMu.Unlock()
		}
	}()
	var bodies strings.Builder // every answer's body
	var bodyMu sync.Mutex
	do := func(method, path, body string) (*http.Response, string) {
		req, _ := http.NewRequest(method, "http://"+data+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer the-clients-own-token")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bodyMu.Lock()
		bodies.Write(b)
		bodyMu.Unlock()
		return resp, string(b)
	}

	// 1. 6 s of steady traffic through tokens that expire every 2 s.
	start := prov.TokenRequests.Load()
	var total, bad atomic.Int64
	deadline := time.Now().Add(6 * time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, _ := do("GET", "/v1/contacts", "")
				total.Add(1)
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	tokReqs := prov.TokenRequests.Load() - start
	t.Logf("steady traffic: %d requests, %d not 200, %d token requests", total.Load(), bad.Load(), tokReqs)
	if bad.Load() != 0 {
		t.Errorf("%d of %d requests were not 200", bad.Load(), total.Load())
	}
	if tokReqs < 3 || tokReqs > 12 || tokReqs*10 > total.Load() {
		t.Errorf("%d token requests for %d requests over 6 s of 2 s tokens: want a handful (3..12)", tokReqs, total.Load())
	}
	if prov.seen["the-clients-own-token"] {
		t.Error("the client's own Authorization reached the upstream")
	}
	prov.mu.Lock()
	aud := prov.audience[0]
	prov.mu.Unlock()
	if aud != "https://crm.example.com" {
		t.Errorf("token request audience %q, want the configured param", aud)
	}

	// 2. A revoked token costs the client nothing but one extra attempt,
	// even for a POST (a JSON-RPC body is buffered, so it replays). Every
	// token issued so far is revoked, the one breakwater holds included.
	// The token source renews in the background, so a renewal can still
	// land between the revocation and the call; then the call rightly
	// needs no retry (and forced no renewal), and the step is tried again.
	rpc := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}`
	for try := 1; ; try++ {
		revoked := prov.RevokeAll(t)
		apiBefore, tokBefore := prov.APIRequests.Load(), prov.TokenRequests.Load()
		resp, body := do("POST", "/mcp", rpc)
		if resp.StatusCode != 200 || body != rpc {
			t.Errorf("after revocation: %d %q, want 200 with the body echoed", resp.StatusCode, body)
		}
		apiN, tokN := prov.APIRequests.Load()-apiBefore, prov.TokenRequests.Load()-tokBefore
		prov.mu.Lock()
		last := prov.last
		prov.mu.Unlock()
		if apiN == 1 && !revoked[last] && try < 5 {
			t.Logf("try %d: a renewal raced the revocation (%d token requests); again", try, tokN)
			continue
		}
		if apiN != 2 {
			t.Errorf("after revocation: the API saw %d requests, want 2 (the 401, then the retry)", apiN)
		}
		if tokN != 1 {
			t.Errorf("after revocation: %d token requests, want 1", tokN)
		}
		if revoked[last] {
			t.Error("the retry reused a revoked token")
		}
		break
	}

	// 3. The token endpoint down: upstream_auth_failed in both forms, and
	// no breaker counts it. (A 401 within min_renew_interval of step 2's
	// forced renewal would pass through instead.)
	time.Sleep(1100 * time.Millisecond)
	prov.Down.Store(true)
	prov.Revoke(t)
	resp, body := do("GET", "/v1/contacts", "")
	for resp.StatusCode == 200 { // a renewal may have raced the revocation
		time.Sleep(200 * time.Millisecond)
		prov.Revoke(t)
		resp, body = do("GET", "/v1/contacts", "")
	}
	if resp.StatusCode != 502 || resp.Header.Get("X-Breakwater-Error") != "upstream_auth_failed" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("token endpoint down: %d %s %q", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"), body)
	}
	var problem struct{ Type, Detail string }
	_ = json.Unmarshal([]byte(body), &problem)
	if !strings.Contains(problem.Detail, `"crm"`) || !strings.Contains(problem.Detail, "503") || !strings.Contains(problem.Detail, "temporarily_unavailable") {
		t.Errorf("problem detail %q: want the upstream, the status and the OAuth2 error code", problem.Detail)
	}
	resp, body = do("POST", "/mcp", rpc)
	var rpcErr struct {
		ID    int
		Error struct {
			Code    int
			Message string
			Data    struct{ Kind string }
		}
	}
	_ = json.Unmarshal([]byte(body), &rpcErr)
	if resp.StatusCode != 502 || rpcErr.ID != 7 || rpcErr.Error.Code != -31503 || rpcErr.Error.Data.Kind != "upstream_auth_failed" ||
		!strings.Contains(rpcErr.Error.Message, `"crm"`) {
		t.Errorf("JSON-RPC form: %d %s", resp.StatusCode, body)
	}
	for range 30 {
		do("GET", "/v1/contacts", "")
	}
	resp, body = do("GET", "/v1/contacts", "")
	if resp.StatusCode != 502 {
		t.Errorf("still down: %d", resp.StatusCode)
	}
	if _, b := testkit.Get(t, client, "http://"+admin+"/breakers"); strings.Contains(b, `"open"`) {
		t.Errorf("a breaker opened on token failures: %s", b)
	}
	if _, h := testkit.Get(t, client, "http://"+admin+"/health"); !strings.Contains(h, `"token"`) || !strings.Contains(h, "temporarily_unavailable") {
		t.Errorf("/health lacks the token's state: %s", h)
	}
	prov.Down.Store(false)
	testkit.WaitFor(t, 10*time.Second, "the token endpoint back", func() bool {
		resp, _ := do("GET", "/v1/contacts", "")
		return resp.StatusCode == 200
	})
	if _, h := testkit.Get(t, client, "http://"+admin+"/health"); !strings.Contains(h, `"expires_in_seconds"`) {
		t.Errorf("/health lacks the time left on the token: %s", h)
	}

	// 4. Rotating the ${file:…} secrets changes what is sent, no restart.
	if s := prov.lastSecret(); s != secret1 {
		t.Fatalf("token endpoint got secret %q, want the first", s)
	}
	prov.SetSecret("bw-client", secret2)
	testkit.ReplaceFile(t, filepath.Join(dir, "secret"), secret2+"\n")
	testkit.ReplaceFile(t, filepath.Join(dir, "apikey"), key2+"\n")
	testkit.WaitFor(t, 15*time.Second, "the rotated secrets in use", func() bool {
		resp, _ := do("GET", "/v1/contacts", "")
		return resp.StatusCode == 200 && prov.lastAPIKey() == key2 && prov.lastSecret() == secret2
	})
	// The log is written in batches: look for the line a while.
	testkit.WaitFor(t, 5*time.Second, "the reload for the changed secret file in the log", func() bool {
		return strings.Contains(p.Out.String(), "secret file changed")
	})

	// Nothing shows a token or a secret: logs, admin answers, metrics,
	// events, error bodies.
	_, metrics := testkit.Get(t, client, "http://"+admin+"/metrics")
	for _, want := range []string{`breakwater_upstream_token_requests_total{result="success",upstream="crm"}`,
		`breakwater_upstream_token_requests_total{result="failure",upstream="crm"}`, `breakwater_upstream_token_expiry_seconds{upstream="crm"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	time.Sleep(300 * time.Millisecond)
	evMu.Lock()
	evText := events.String()
	evMu.Unlock()
	if !strings.Contains(evText, "event: token") || !strings.Contains(evText, `"reason":"forced"`) {
		t.Errorf("/events lacks the token renewals:\n%s", evText)
	}
	answers := map[string]string{"log": p.Out.String(), "/metrics": metrics, "/events": evText, "bodies": bodies.String()}
	for _, path := range []string{"/health", "/config", "/routes", "/breakers"} {
		_, answers[path] = testkit.Get(t, client, "http://"+admin+path)
	}
	tokens := prov.Tokens()
	if len(tokens) < 4 {
		t.Fatalf("only %d tokens seen", len(tokens))
	}
	for where, text := range answers {
		for _, s := range append(tokens, secret1, secret2, key1, key2) {
			if s != "the-clients-own-token" && strings.Contains(text, s) {
				t.Errorf("%s shows a token or secret (%.6s…)", where, s)
			}
		}
	}
	_ = os.Remove(filepath.Join(dir, "nothing"))
}

// TestOAuth2ExampleE2E runs examples/mcp-egress/oauth2.yaml as shipped
// (only its secret file's path pointed at a temporary one) against the
// real OAuth2 server library: the MCP server's call gets through with a
// token it never saw.
func TestOAuth2ExampleE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	prov := newProvider(t, "crm-app", "example-secret-8c21", time.Minute)
	dir := t.TempDir()
	secret := writeFile(t, dir, "client_secret", "example-secret-8c21\n")
	text, err := os.ReadFile("examples/mcp-egress/oauth2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text = []byte(strings.NewReplacer("/var/run/secrets/crm/client_secret", secret,
		"listen: 127.0.0.1:8080", "listen: 127.0.0.1:0", "listen: 127.0.0.1:9901", "listen: localhost:0").Replace(string(text)))
	file := writeFile(t, dir, "oauth2.yaml", string(text))
	cmd := exec.Command(binary, "-config", file)
	cmd.Env = env("CRM_CLIENT_ID=crm-app", "CRM_API_URL="+prov.API.URL, "CRM_TOKEN_URL="+prov.Token.URL+"/token")
	p := testkit.Start(t, cmd)
	data, _ := p.WaitStarted(t, 15*time.Second)
	for range 5 {
		resp, err := http.Post("http://"+data+"/crm/v3/objects/contacts", "application/json",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("through the example: %d\n%s", resp.StatusCode, p.Out.String())
		}
	}
	if n := prov.TokenRequests.Load(); n != 1 {
		t.Errorf("%d token requests for 5 calls, want 1", n)
	}
}
