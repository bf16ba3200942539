package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

const (
	apiToken   = "tok-9f8e7d6c5b4a"
	adminToken = "adm-1234567890"
)

// secretFile uses API_TOKEN in a header value and, like a careless user,
// in the upstream URL and a fallback body too.
const secretFile = `admin:
  token: "${ADMIN_TOKEN}"
upstreams:
  api:
    url: "https://api.example.com/v1/${API_TOKEN}"
    headers:
      set:
        Authorization: "Bearer ${API_TOKEN}"
        X-Short: "abc"
routes:
  - name: r
    upstream: api
    fallback: {status: 503, body: "token ${API_TOKEN} is broken"}
`

var secretEnv = map[string]string{"API_TOKEN": apiToken, "ADMIN_TOKEN": adminToken}

func parseSecrets(t *testing.T) *Config {
	t.Helper()
	cfg, _, err := Parse("bw.yaml", []byte(secretFile), env(secretEnv), Overrides{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// assertNoSecret fails when out contains any secret value.
func assertNoSecret(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s shows the secret %q:\n%s", what, s, out)
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	cfg := parseSecrets(t)
	up := cfg.Upstreams["api"]
	auth := up.Headers.Set["Authorization"]
	secrets := []string{"Bearer " + apiToken, adminToken}

	values := map[string]any{
		"Secret":            auth,
		"*Secret":           &auth,
		"Headers":           up.Headers,
		"Admin":             cfg.Admin,
		"*Upstream":         up,
		"Upstream":          *up,
		"*Config":           cfg,
		"Config":            *cfg,
		"map[string]Secret": up.Headers.Set,
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x"} {
			out := fmt.Sprintf(verb, v)
			assertNoSecret(t, fmt.Sprintf("fmt %s of %s", verb, name), out, secrets...)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Errorf("json.Marshal(%s): %v", name, err)
		}
		assertNoSecret(t, "json.Marshal of "+name, string(b), secrets...)
	}

	if got := fmt.Sprint(auth); got != Redacted {
		t.Errorf("fmt.Sprint(secret) = %q, want %q", got, Redacted)
	}
	if got := fmt.Sprintf("%#v", up.Headers.Set); !strings.Contains(got, `"Authorization":[REDACTED]`) {
		t.Errorf("%%#v of headers.set = %s, want the value shown as [REDACTED]", got)
	}
	if b, _ := json.Marshal(cfg.Admin); !strings.Contains(string(b), `"token":"[REDACTED]"`) {
		t.Errorf("json of admin = %s, want token [REDACTED]", b)
	}
	if got := fmt.Sprint(NewSecret("")); got != "" {
		t.Errorf("an empty secret prints as %q, want \"\"", got)
	}
}

func TestRevealGivesTheValue(t *testing.T) {
	cfg := parseSecrets(t)
	if got := cfg.Upstreams["api"].Headers.Set["Authorization"].Reveal(); got != "Bearer "+apiToken {
		t.Errorf("Reveal() = %q, want %q", got, "Bearer "+apiToken)
	}
	if got := cfg.Admin.Token.Reveal(); got != adminToken {
		t.Errorf("admin token Reveal() = %q, want %q", got, adminToken)
	}
	if got := NewSecret("x").Reveal(); got != "x" {
		t.Errorf("NewSecret(x).Reveal() = %q", got)
	}
	if !NewSecret("").IsZero() || NewSecret("x").IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestConfigJSONRedactsSecretsAndVariablesUsedInThem(t *testing.T) {
	cfg := parseSecrets(t)
	out := string(cfg.JSON())
	// API_TOKEN also sits in the URL and the fallback body, which are not
	// secrets themselves; it is redacted there too.
	assertNoSecret(t, "Config.JSON()", out, apiToken, adminToken)
	for _, want := range []string{
		`"url": "https://api.example.com/v1/[REDACTED]"`,
		`"Authorization": "[REDACTED]"`,
		`"X-Short": "[REDACTED]"`,
		`"token": "[REDACTED]"`,
		`"body": "token [REDACTED] is broken"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Config.JSON() lacks %s:\n%s", want, out)
		}
	}
	if !json.Valid(cfg.JSON()) {
		t.Error("Config.JSON() is not valid JSON")
	}
	// The unexported copy of the variables stays out of fmt too.
	assertNoSecret(t, "fmt %+v of Config", fmt.Sprintf("%+v", *cfg), apiToken)

	// A variable that is not used in a secret is not redacted.
	cfg, _, err := Parse("bw.yaml", []byte(base+"    fallback: {body: '${PLAIN}'}\n"), env(map[string]string{"PLAIN": "plain-value"}), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg.JSON()), `"body": "plain-value"`) {
		t.Errorf("a variable used in no secret was redacted:\n%s", cfg.JSON())
	}
}

func TestConfigJSONRedactsJSONEscapedSecrets(t *testing.T) {
	// json.Marshal writes <, > and & as \u003c…; the redaction must find
	// the value in that form too.
	const tok = "a<b>&c-secret"
	cfg, _, err := Parse("bw.yaml", []byte(secretFile), env(map[string]string{"API_TOKEN": tok, "ADMIN_TOKEN": adminToken}), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	out := string(cfg.JSON())
	escaped, _ := json.Marshal(tok)
	assertNoSecret(t, "Config.JSON()", out, tok, strings.Trim(string(escaped), `"`), "secret")
}

func TestProblemsNeverShowSecrets(t *testing.T) {
	long := "tok-" + strings.Repeat("0123456789", 6) // longer than an echo is clipped to
	tests := []struct {
		name string
		yaml string
	}{
		{
			name: "errors next to secrets",
			yaml: `admin: {listen: ":9901", allow_remote: true, token: "${ADMIN_TOKEN}"}
upstreams:
  api:
    url: "https://api.example.com"
    headers: {set: {Authorization: "Bearer ${API_TOKEN}", "Bad Name": "${API_TOKEN}"}}
routes:
  - {name: r, upstream: api, errors: html}
`,
		},
		{
			name: "a secret variable used where a duration belongs",
			yaml: `upstreams:
  api:
    url: "https://api.example.com"
    headers: {set: {Authorization: "Bearer ${API_TOKEN}"}}
routes:
  - {name: r, upstream: api, timeout: "${API_TOKEN}"}
`,
		},
		{
			name: "a secret variable used inside a longer bad value",
			yaml: `upstreams:
  api:
    url: "https://api.example.com"
    headers: {set: {Authorization: "Bearer ${API_TOKEN}"}}
routes:
  - {name: r, upstream: api, retry: {max_body: "x ${API_TOKEN}"}}
log: {level: "${API_TOKEN}"}
`,
		},
		{
			name: "the admin token used where an enum belongs",
			yaml: `admin: {token: "${ADMIN_TOKEN}"}
upstreams:
  api: {url: "https://api.example.com", host_header: "${ADMIN_TOKEN}"}
routes:
  - {name: r, upstream: api}
`,
		},
	}
	for _, tt := range tests {
		for _, tok := range []string{apiToken, long} {
			t.Run(fmt.Sprintf("%s/%d chars", tt.name, len(tok)), func(t *testing.T) {
				_, _, err := Parse("bw.yaml", []byte(tt.yaml), env(map[string]string{"API_TOKEN": tok, "ADMIN_TOKEN": tok + "-adm"}), Overrides{})
				if err == nil {
					t.Fatal("want an error")
				}
				out := err.Error()
				assertNoSecret(t, "the error", out, tok, tok[:12])
				if !strings.Contains(out, "bw.yaml:") {
					t.Errorf("the error names no file: %s", out)
				}
			})
		}
	}
}

func TestHash(t *testing.T) {
	parseHash := func(text string) string {
		t.Helper()
		cfg, _, err := Parse("bw.yaml", []byte(text), env(nil), Overrides{})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(cfg.Hash) != 16 {
			t.Fatalf("Hash = %q, want 16 hex digits", cfg.Hash)
		}
		return cfg.Hash
	}
	const file = `admin: {token: "admin-secret"}
upstreams:
  api:
    url: "http://127.0.0.1:9000"
    headers:
      set: {A: "aaaa", B: "bbbb", C: "cccc", D: "dd"}
routes:
  - name: r
    upstream: api
    timeout: 5s
`
	h := parseHash(file)
	// Map order must not leak into the hash: parse it many times.
	for range 20 {
		if got := parseHash(file); got != h {
			t.Fatalf("the same file hashed to %s and %s", h, got)
		}
	}

	same := []struct{ name, text string }{
		{"comments and spacing", "# a comment\n" + strings.ReplaceAll(file, "timeout: 5s", "timeout:    5s   # five")},
		{"an equal value written differently", strings.ReplaceAll(file, "timeout: 5s", "timeout: 5000ms")},
		{"keys in another order", strings.ReplaceAll(file, `{A: "aaaa", B: "bbbb", C: "cccc", D: "dd"}`, `{D: "dd", C: "cccc", B: "bbbb", A: "aaaa"}`)},
		{"a default written out", strings.ReplaceAll(file, "timeout: 5s", "timeout: 5s\n    errors: auto")},
	}
	for _, tt := range same {
		if got := parseHash(tt.text); got != h {
			t.Errorf("%s changed the hash", tt.name)
		}
	}

	changed := []struct{ name, text string }{
		{"a timeout", strings.ReplaceAll(file, "timeout: 5s", "timeout: 6s")},
		{"a header value", strings.ReplaceAll(file, `"aaaa"`, `"aaab"`)},
		{"a short header value", strings.ReplaceAll(file, `"dd"`, `"de"`)},
		{"two header values swapped", strings.ReplaceAll(file, `A: "aaaa", B: "bbbb"`, `A: "bbbb", B: "aaaa"`)},
		{"the admin token", strings.ReplaceAll(file, "admin-secret", "admin-secreu")},
		{"a route added", file + "  - {name: s, upstream: api}\n"},
		{"a cache turned on", file + "    cache: {ttl: 1m}\n"},
		{"a breaker mode", file + "    circuit_breaker: {failure_threshold: 3}\n"},
		{"the upstream url", strings.ReplaceAll(file, "9000", "9001")},
	}
	seen := map[string]string{h: "the original"}
	for _, tt := range changed {
		got := parseHash(tt.text)
		if prev, dup := seen[got]; dup {
			t.Errorf("changing %s gave the hash of %s", tt.name, prev)
		}
		seen[got] = tt.name
	}
}

func TestHashIgnoresItself(t *testing.T) {
	cfg := mustParse(t, base)
	if got := cfg.hash(); got != cfg.Hash {
		t.Errorf("hash() after Parse = %s, want the stored %s", got, cfg.Hash)
	}
}
