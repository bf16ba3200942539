package admin_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/policy"
)

// Admin hardening (SPEC.md, "Admin hardening"; issue 11, defects 3, 10
// and 14), against the admin handler behind a real loopback listener.

const openConfig = `version: 1
upstreams:
  api: { url: "{{UP}}" }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: api, circuit_breaker: { delay: 1m } }
`

// send is one admin request with extra headers; "Host" sets the Host
// header itself.
func (e *env) send(method, path string, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.admin.URL+path, strings.NewReader(""))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := e.admin.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// adminHost is the admin listener's host:port, as a browser would send it.
func (e *env) adminHost() string { return strings.TrimPrefix(e.admin.URL, "http://") }

// checkRefused wants a 403 whose body is a JSON error.
func checkRefused(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	var ans struct {
		Error string `json:"error"`
	}
	if resp.StatusCode != http.StatusForbidden || json.Unmarshal(body, &ans) != nil || ans.Error == "" ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s: %d %s %s, want 403 with a JSON error", what, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// TestCrossOriginPostRefused (defect 3): with the default config (loopback,
// no token) a POST whose Origin is not the admin listener's own is refused,
// whatever it asks; so is one with the right token. Without Origin (curl,
// scripts) or with the admin's own origin (the dashboard) it goes through.
func TestCrossOriginPostRefused(t *testing.T) {
	for _, tc := range []struct{ name, yaml, token string }{
		{"no token", openConfig, ""},
		{"token", "admin: { token: let-me-in }\n" + openConfig, "let-me-in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.yaml)
			auth := map[string]string{}
			if tc.token != "" {
				auth["Authorization"] = "Bearer " + tc.token
			}
			with := func(kv ...string) map[string]string {
				h := map[string]string{"Content-Type": "text/plain"}
				for k, v := range auth {
					h[k] = v
				}
				for i := 0; i < len(kv); i += 2 {
					h[kv[i]] = kv[i+1]
				}
				return h
			}
			_, port, _ := net.SplitHostPort(e.adminHost())
			for _, origin := range []string{
				"http://evil.example",
				"null",
				"http://evil.example:" + port,
				"http://127.0.0.1:1",
				"https://" + e.adminHost(),
				"http://" + e.adminHost() + ".evil.example",
			} {
				for _, path := range []string{"/breakers/api?state=open", "/cache/purge", "/reload", "/upstreams/api?mode=cache_only"} {
					resp, body := e.send("POST", path, with("Origin", origin))
					checkRefused(t, fmt.Sprintf("POST %s from Origin %s", path, origin), resp, body)
				}
			}
			if st := e.breaker("api").State; st != policy.Closed {
				t.Fatalf("a cross-origin POST opened the breaker: %s", st)
			}
			// The dashboard's own origin, and no Origin at all.
			if resp, body := e.send("POST", "/breakers/api?state=open", with("Origin", "http://"+e.adminHost())); resp.StatusCode != 200 {
				t.Errorf("POST from the admin's own origin: %d %s", resp.StatusCode, body)
			}
			if resp, body := e.send("POST", "/breakers/api?state=closed", with()); resp.StatusCode != 200 {
				t.Errorf("POST without Origin: %d %s", resp.StatusCode, body)
			}
			// A cross-origin GET is not a change: the browser will not let
			// the page read the answer (no CORS headers).
			if resp, body := e.send("GET", "/breakers", map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != 200 {
				t.Errorf("GET /breakers from another origin: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// TestForeignHostRefusedOnLoopback (defect 3, DNS rebinding): while the
// admin listener is on loopback, any request whose Host is not a loopback
// name or address gets 403, GET included; loopback names pass, with or
// without a port.
func TestForeignHostRefusedOnLoopback(t *testing.T) {
	e := newEnv(t, openConfig)
	_, port, _ := net.SplitHostPort(e.adminHost())
	for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example:" + port,
		"localhost.evil.example", "10.0.0.1:" + port, "0.0.0.0:" + port, "[::ffff:8.8.8.8]:" + port} {
		for _, c := range []struct{ method, path string }{
			{"GET", "/config"}, {"GET", "/healthz"}, {"GET", "/"}, {"GET", "/ui/state.json"},
			{"POST", "/breakers/api?state=open"},
		} {
			resp, body := e.send(c.method, c.path, map[string]string{"Host": host})
			checkRefused(t, fmt.Sprintf("%s %s with Host %s", c.method, c.path, host), resp, body)
		}
	}
	if st := e.breaker("api").State; st != policy.Closed {
		t.Fatalf("a foreign Host opened the breaker: %s", st)
	}
	for _, host := range []string{"127.0.0.1:" + port, "127.0.0.1", "127.9.8.7:" + port, "localhost:" + port,
		"LocalHost", "localhost.:" + port, "[::1]:" + port, "[::1]"} {
		if resp, body := e.send("GET", "/healthz", map[string]string{"Host": host}); resp.StatusCode != 200 {
			t.Errorf("GET /healthz with Host %s: %d %s", host, resp.StatusCode, body)
		}
	}
	// HTTP/1.0 may leave Host out; that is not a loopback name either.
	conn, err := net.Dial("tcp", e.adminHost())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /config HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	checkRefused(t, "GET /config without Host (HTTP/1.0)", resp, body)
}

// TestBearerSchemeIsCaseInsensitive (defect 10): RFC 9110 §11.1 makes the
// auth scheme case-insensitive.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	e := newEnv(t, "admin: { token: let-me-in }\n"+openConfig)
	for _, c := range []struct {
		auth string
		want int
	}{
		{"Bearer let-me-in", 200},
		{"bearer let-me-in", 200},
		{"BEARER let-me-in", 200},
		{"bEaReR  let-me-in", 200},
		{"bearer let-me-out", 401},
		{"bearerlet-me-in", 401},
		{"Basic let-me-in", 401},
		{"let-me-in", 401},
		{"bearer ", 401},
	} {
		resp, body := e.send("POST", "/breakers/api?state=closed", map[string]string{"Authorization": c.auth})
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q: %d %s, want %d", c.auth, resp.StatusCode, body, c.want)
		}
	}
}

// TestPostOnlyEndpointsAnswer405 (defect 14): with the dashboard on the
// admin mux, as main wires it, a GET to a POST-only endpoint is 405 with
// Allow: POST, not the dashboard's 404.
func TestPostOnlyEndpointsAnswer405(t *testing.T) {
	e := newEnv(t, "admin: { token: let-me-in }\n"+openConfig)
	for _, c := range []struct{ method, path string }{
		{"GET", "/reload"}, {"HEAD", "/reload"}, {"GET", "/cache/purge"}, {"GET", "/cache/purge?route=api"},
		{"GET", "/breakers/api"}, {"GET", "/breakers/api?state=open"}, {"PUT", "/reload"},
		{"DELETE", "/cache/purge"}, {"PATCH", "/breakers/api"}, {"OPTIONS", "/reload"},
		{"GET", "/upstreams/api"}, {"GET", "/upstreams/api?mode=cache_only"}, {"DELETE", "/upstreams/nope"},
	} {
		resp, body := e.send(c.method, c.path, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
			t.Errorf("%s %s: %d Allow %q %s, want 405 with Allow: POST", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
	// The dashboard and the read-only endpoints still answer.
	for _, path := range []string{"/", "/ui/", "/ui/app.js", "/ui/state.json", "/breakers", "/health"} {
		if resp, body := e.send("GET", path, nil); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
}

const remoteConfig = `version: 1
admin: { listen: "0.0.0.0:9901", allow_remote: true, token: let-me-in }
upstreams:
  api: { url: "{{UP}}" }
routes:
  - { name: api, match: { path_prefix: /api }, upstream: api, circuit_breaker: { delay: 1m } }
`

// TestRemoteAdminTokenRulesFollowTheBoundAddress (defect 4): with the admin
// listener bound on every interface, a reload may not drop admin.token or
// admin.allow_remote (400 naming the field, a counted failure, the old
// config kept), whatever the new file says about admin.listen; every
// change keeps needing the token, in any case of the scheme.
func TestRemoteAdminTokenRulesFollowTheBoundAddress(t *testing.T) {
	e := newEnvAt(t, remoteConfig, "0.0.0.0:0")
	hash := e.srv.Config().Hash
	// Beyond loopback the Host is not checked (the token is what protects).
	if resp, body := e.send("GET", "/healthz", map[string]string{"Host": "breakwater.internal:9901"}); resp.StatusCode != 200 {
		t.Errorf("GET /healthz by name: %d %s", resp.StatusCode, body)
	}
	if code, body := e.call("GET", "/ui/state.json", ""); code != 200 || !strings.Contains(string(body), `"actions":true,"token_required":true`) {
		t.Errorf("dashboard state: %d %s", code, body)
	}
	for _, c := range []struct {
		name, from, to, field string
	}{
		{"token dropped with a loopback listen", "allow_remote: true, token: let-me-in }", "}", "admin.token"},
		{"allow_remote off", "allow_remote: true, ", "", "admin.allow_remote"},
	} {
		t.Run(c.name, func(t *testing.T) {
			next := strings.Replace(remoteConfig, `listen: "0.0.0.0:9901", `, `listen: "127.0.0.1:9901", `, 1)
			next = strings.Replace(next, c.from, c.to, 1)
			if next == remoteConfig {
				t.Fatal("the test's file did not change")
			}
			e.write(next)
			failures := e.metric("breakwater_config_reloads_total", map[string]string{"result": "failure"})
			code, body := e.call("POST", "/reload", "let-me-in")
			var ans struct {
				OK     bool     `json:"ok"`
				Hash   string   `json:"config_hash"`
				Errors []string `json:"errors"`
			}
			_ = json.Unmarshal(body, &ans)
			named := false
			for _, l := range ans.Errors {
				named = named || strings.HasPrefix(l, e.file+":") && strings.Contains(l, " "+c.field+": ")
			}
			if code != 400 || ans.OK || ans.Hash != hash || !named {
				t.Fatalf("reload: %d %s; want 400 with an error on %s, the running hash %s", code, body, c.field, hash)
			}
			if got := e.metric("breakwater_config_reloads_total", map[string]string{"result": "failure"}); got != failures+1 {
				t.Errorf("reloads_total{failure} = %v, want %v", got, failures+1)
			}
			if e.srv.Config().Hash != hash || e.srv.Config().Admin.Token.IsZero() {
				t.Fatal("the running config was replaced")
			}
			for _, auth := range []string{"", "Bearer nope"} {
				resp, body := e.send("POST", "/breakers/api?state=open", map[string]string{"Authorization": auth})
				if resp.StatusCode != 401 {
					t.Errorf("POST with Authorization %q: %d %s, want 401", auth, resp.StatusCode, body)
				}
			}
			if code, body := e.call("POST", "/breakers/api?state=closed", "let-me-in"); code != 200 {
				t.Errorf("POST with the token: %d %s", code, body)
			}
		})
	}
	// The same file with the token kept is fine, even with a new address
	// (which waits for a restart).
	e.write(strings.Replace(remoteConfig, "0.0.0.0:9901", "0.0.0.0:9902", 1))
	if code, body := e.call("POST", "/reload", "let-me-in"); code != 200 {
		t.Errorf("reload keeping the token: %d %s", code, body)
	}
}

// TestRemoteAdminWithoutTokenFailsClosed: a listener bound beyond loopback
// whose running config has no token (a -admin flag on a loopback file, or
// any other way) refuses every change, and the dashboard offers none.
func TestRemoteAdminWithoutTokenFailsClosed(t *testing.T) {
	e := newEnvAt(t, openConfig, "0.0.0.0:0")
	for _, path := range []string{"/breakers/api?state=open", "/cache/purge", "/reload"} {
		resp, body := e.send("POST", path, nil)
		checkRefused(t, "POST "+path, resp, body)
	}
	if st := e.breaker("api").State; st != policy.Closed {
		t.Fatalf("the breaker was forced: %s", st)
	}
	if code, body := e.call("GET", "/ui/state.json", ""); code != 200 || !strings.Contains(string(body), `"actions":false`) {
		t.Errorf("dashboard state: %d %s, want no actions", code, body)
	}
}
