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

// assertShows fails when out lacks any of wants.
func assertShows(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %s:\n%s", what, w, out)
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
	assertShows(t, "Config.JSON()", out,
		`"url": "https://api.example.com/v1/[REDACTED]"`,
		`"Authorization": "[REDACTED]"`,
		`"X-Short": "[REDACTED]"`,
		`"token": "[REDACTED]"`,
		`"body": "token [REDACTED] is broken"`)
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

// A secret of any length is shown nowhere, also where the variable that
// fills it fills another field: redaction by value skips values shorter
// than 4 characters (it would redact every "a"), so such a field is
// treated as secret itself.
func TestShortSecretsInOtherFieldsNeverShow(t *testing.T) {
	const valid = `admin: {token: "${ADMIN_TOKEN}"}
upstreams:
  api:
    url: "https://api.example.com/v1/${SHORT}"
    headers: {set: {X-Key: "${SHORT}"}}
routes:
  - name: r
    upstream: api
    match: {path_prefix: "/${SHORT}/"}
    strip_prefix: /other
    fallback: {body: "key=${SHORT}"}
`
	const invalid = `listen: "127.0.0.1:${SHORT}"
upstreams:
  api:
    url: "https://api.example.com"
    host_header: "${SHORT}"
    headers: {set: {X-Key: "${SHORT}"}}
log: {level: "${SHORT}"}
routes:
  - name: r
    upstream: api
    timeout: "${SHORT}"
    retry: {max_body: "x${SHORT}"}
    match: {methods: ["${SHORT}x"]}
`
	// The variable reaches the secret through an alias here: what counts
	// is the field a value is decoded into.
	aliased := strings.Replace(strings.Replace(valid, `url: "https`, `url: &u "https`, 1), `X-Key: "${SHORT}"`, `X-Key: *u`, 1)
	hashes := map[string]bool{}
	// Upper-case letters and digits that no message or key here contains.
	for _, short := range []string{"Q", "QZ", "QZ7"} {
		for _, file := range []string{valid, aliased} {
			name := fmt.Sprintf("%d chars", len(short))
			if file == aliased {
				name += " through an alias"
			}
			t.Run(name, func(t *testing.T) {
				vars := env(map[string]string{"SHORT": short, "ADMIN_TOKEN": adminToken})
				cfg, warns, err := Parse("bw.yaml", []byte(file), vars, Overrides{})
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if file == valid {
					hashes[cfg.Hash] = true
				}
				out := string(cfg.JSON())
				assertNoSecret(t, "Config.JSON()", out, short)
				assertShows(t, "Config.JSON()", out,
					`"url": "https://api.example.com/v1/[REDACTED]"`,
					`"X-Key": "[REDACTED]"`,
					`"path_prefix": "/[REDACTED]/"`,
					`"body": "key=[REDACTED]"`)
				assertNoSecret(t, "the summary", Summary(cfg).String(), short)
				if b, _ := json.Marshal(Summary(cfg)); true {
					assertNoSecret(t, "the summary's JSON", string(b), short)
				}
				if len(warns) == 0 {
					t.Error("want the strip_prefix warning, which quotes match.path_prefix")
				}
				assertNoSecret(t, "the warnings", Problems(warns).Error(), short)

				_, _, err = Parse("bw.yaml", []byte(invalid), vars, Overrides{})
				ps := problemsOf(t, err)
				assertNoSecret(t, "the errors", ps.Error(), short)
				for _, path := range []string{"listen", "upstreams.api.host_header", "log.level", "routes[0].timeout", "routes[0].retry.max_body", "routes[0].match.methods[0]"} {
					found := false
					for _, p := range ps {
						found = found || p.Path == path
					}
					if !found {
						t.Errorf("no problem at %s:\n%v", path, ps)
					}
				}
				// The messages still say what is wrong.
				assertShows(t, "the errors", ps.Error(),
					`log.level: want debug, info, warn or error, got "[REDACTED]"`,
					`routes[0].timeout: want a duration such as 250ms or 30s, got "[REDACTED]"`)
			})
		}
	}
	if len(hashes) != 1 {
		t.Errorf("the value of a secret changed the hash: %v", hashes)
	}
}
