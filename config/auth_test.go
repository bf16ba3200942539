package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func noEnv(string) (string, bool) { return "", false }

// ${file:/path} is the file's content without its trailing newline; it is
// a secret wherever it lands, the file is listed for the watcher, and it
// is read again by the next load.
func TestFileExpansion(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	host := filepath.Join(dir, "host")
	_ = os.WriteFile(secret, []byte("file-secret-v1\n"), 0o600)
	_ = os.WriteFile(host, []byte("api-file-host.example\n"), 0o600)
	text := `version: 1
upstreams:
  api:
    url: https://${file:` + host + `}
    headers: { set: { X-Key: "${file:` + secret + `}" } }
    auth:
      oauth2: { token_url: "https://auth.example/token", client_id: id, client_secret: "${file:` + secret + `}" }
routes: [{ name: r, match: { path_prefix: / }, upstream: api }]
`
	cfg, _, err := Parse("t.yaml", []byte(text), noEnv, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["api"]
	if got := u.Auth.OAuth2.ClientSecret.Reveal(); got != "file-secret-v1" {
		t.Errorf("client_secret %q, want the file without its newline", got)
	}
	if u.URL != "https://api-file-host.example" {
		t.Errorf("url %q", u.URL)
	}
	shown := string(cfg.JSON())
	if strings.Contains(shown, "file-secret-v1") || strings.Contains(shown, "api-file-host") {
		t.Errorf("/config shows a value read from a file:\n%s", shown)
	}
	if got := cfg.SecretFiles(); len(got) != 2 || got[0] != host || got[1] != secret {
		t.Errorf("SecretFiles %v", got)
	}
	_ = os.WriteFile(secret, []byte("file-secret-v2"), 0o600)
	cfg2, _, err := Parse("t.yaml", []byte(text), noEnv, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg2.Upstreams["api"].Auth.OAuth2.ClientSecret.Reveal(); got != "file-secret-v2" {
		t.Errorf("after rotation: %q", got)
	}

	_, _, err = Parse("t.yaml", []byte(strings.ReplaceAll(text, secret, filepath.Join(dir, "missing"))), noEnv, Overrides{})
	if err == nil || !strings.Contains(err.Error(), "t.yaml:5: upstreams.api.headers.set.X-Key: ${file:"+filepath.Join(dir, "missing")+"}: cannot read the file") {
		t.Errorf("missing file: %v", err)
	}
}

// Every auth.oauth2 problem is reported, each at its line.
func TestAuthValidation(t *testing.T) {
	text := `version: 1
upstreams:
  api:
    url: https://api.example
    auth:
      oauth2:
        token_url: not a url
        grant: implicit
        auth_style: query
        scopes: ["a b"]
        params: { client_secret: x }
        redirect_port: 70000
        min_renew_interval: 500ms
  pw:
    url: https://api.example
    auth:
      oauth2: { token_url: "https://a/t", client_id: id, grant: password }
  rt:
    url: https://api.example
    auth:
      oauth2: { token_url: "https://a/t", client_id: id, grant: refresh_token }
routes: [{ name: r, match: { path_prefix: / }, upstream: api }]
`
	_, _, err := Parse("t.yaml", []byte(text), noEnv, Overrides{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"t.yaml:7: upstreams.api.auth.oauth2.token_url: want an absolute",
		"t.yaml:8: upstreams.api.auth.oauth2.grant: want client_credentials, refresh_token or password",
		"t.yaml:9: upstreams.api.auth.oauth2.auth_style: want header or params",
		"t.yaml:10: upstreams.api.auth.oauth2.scopes:",
		"t.yaml:11: upstreams.api.auth.oauth2.params.client_secret:",
		"t.yaml:12: upstreams.api.auth.oauth2.redirect_port:",
		"t.yaml:13: upstreams.api.auth.oauth2.min_renew_interval: must be at least 1s",
		"upstreams.api.auth.oauth2.client_id: client_id is needed",
		"t.yaml:17: upstreams.pw.auth.oauth2.username:",
		"t.yaml:17: upstreams.pw.auth.oauth2.password:",
		"t.yaml:21: upstreams.rt.auth.oauth2.refresh_token_file:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
