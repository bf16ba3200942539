package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/observe"
)

const (
	upstreamSecret = "s3cr3t-TOKEN-value-123"
	adminSecret    = "adm1n-s3cr3t-TOKEN-456"
)

const secretConfig = `version: 1
admin:
  token: ${BW_TEST_ADMIN_TOKEN}
upstreams:
  api:
    url: "{{UP}}"
    headers:
      set: { Authorization: "Bearer ${BW_TEST_API_TOKEN}", X-Api-Key: "${BW_TEST_API_TOKEN}" }
routes:
  - name: api
    match: { path_prefix: /api }
    upstream: api
    retry: off
    circuit_breaker: { failure_threshold: 1, delay: 1m }
`

// TestSecretsNeverShown: the upstream gets the secret, and it shows up in
// no admin answer, event, log line or error body, whether the file is good
// or misplaces the secret where a message would echo it.
func TestSecretsNeverShown(t *testing.T) {
	t.Setenv("BW_TEST_API_TOKEN", upstreamSecret)
	t.Setenv("BW_TEST_ADMIN_TOKEN", adminSecret)
	e := newEnv(t, secretConfig)
	events := e.subscribe()

	var bodies []string
	keep := func(what string, _ int, body []byte) {
		bodies = append(bodies, what+": "+string(body))
	}
	resp, body := e.get("/api/ok")
	if resp.StatusCode != 200 || e.lastAuth.Load() != "Bearer "+upstreamSecret {
		t.Fatalf("the upstream did not get the secret: %d, saw %q", resp.StatusCode, e.lastAuth.Load())
	}
	for _, p := range []string{"/api/fail", "/api/ok", "/nowhere"} { // upstream 503, circuit_open, no_route
		resp, body = e.get(p)
		bodies = append(bodies, p+": "+body+" "+strings.Join(headerLines(resp), " "))
	}
	if resp.StatusCode != 404 {
		t.Fatalf("/nowhere: %d", resp.StatusCode)
	}
	for _, p := range []string{"/config", "/health", "/breakers", "/routes", "/metrics", "/healthz", "/readyz"} {
		code, b := e.call("GET", p, "")
		if code != 200 && (p != "/health" || code != 503) { // the only breaker is open: unhealthy
			t.Errorf("GET %s: %d", p, code)
		}
		keep("GET "+p, code, b)
	}
	if _, b := e.call("GET", "/config", ""); !strings.Contains(string(b), `"token": "[REDACTED]"`) && !strings.Contains(string(b), "REDACTED") {
		t.Errorf("/config shows no redaction mark: %s", b)
	}
	code, b := e.call("POST", "/breakers/api?state=closed", "not-"+adminSecret)
	if code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	keep("401", code, b)
	if code, b = e.call("POST", "/breakers/api?state=closed", adminSecret); code != 200 {
		t.Fatalf("right token: %d %s", code, b)
	}
	keep("force", code, b)

	// A file that puts the secret where a duration belongs, and one with
	// the secret in an unknown key's value: both rejected, neither echoed.
	for _, bad := range []string{
		strings.Replace(secretConfig, "retry: off", "timeout: ${BW_TEST_API_TOKEN}", 1),
		strings.Replace(secretConfig, "retry: off", "retry: { attempts: \"${BW_TEST_API_TOKEN}\" }", 1),
	} {
		e.write(bad)
		code, b = e.call("POST", "/reload", adminSecret)
		if code != 400 {
			t.Fatalf("bad reload: %d %s", code, b)
		}
		keep("bad reload", code, b)
	}
	e.write(strings.Replace(secretConfig, "delay: 1m", "delay: 2m", 1))
	code, b = e.call("POST", "/reload", adminSecret)
	if code != 200 {
		t.Fatalf("good reload: %d %s", code, b)
	}
	keep("good reload", code, b)
	if _, b = e.call("GET", "/health", ""); true {
		keep("health after reloads", 200, b)
	}

	// Wait until the last reload's event has been read, so the raw stream
	// holds everything published.
	events.next(t, 5*time.Second, func(ev observe.Event) bool { return ev.Type == "reload" && ev.Data["ok"] == true })

	for what, text := range map[string]string{
		"admin answers and error bodies": strings.Join(bodies, "\n"),
		"the /events stream":             events.raw.String(),
		"the logs":                       e.logs.String(),
	} {
		for _, secret := range []string{upstreamSecret, adminSecret, "s3cr3t-TOKEN"} {
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s show %q: …%s…", what, secret, text[max(0, i-200):min(len(text), i+100)])
			}
		}
	}
	if !strings.Contains(e.logs.String(), "reload rejected") {
		t.Error("the rejected reloads were not logged")
	}
}

func headerLines(resp *http.Response) []string {
	var out []string
	for k, vs := range resp.Header {
		out = append(out, k+": "+strings.Join(vs, ", "))
	}
	return out
}
