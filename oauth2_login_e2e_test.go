package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

const loginConfig = `version: 1
listen: 127.0.0.1:0
admin: { listen: localhost:0 }
upstreams:
  mail:
    url: %API%
    auth:
      oauth2:
        grant: refresh_token
        token_url: %TOKEN%/token
        auth_url: %TOKEN%/authorize
        redirect_port: %PORT%
        client_id: bw-app
        client_secret: app-secret-5e1d
        refresh_token_file: %DIR%/mail.token
routes:
  - name: mail
    match: { path_prefix: / }
    upstream: mail
`

// TestOAuth2LoginE2E runs `breakwater oauth2 login` against a real OAuth2
// server library, an HTTP client playing the browser: the refresh token
// lands in its file (0600) and nowhere on the terminal; then breakwater
// serves with the refresh_token grant, and a rotated refresh token is
// written back to the file.
func TestOAuth2LoginE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	prov := newProvider(t, "other", "unused", 2*time.Second)
	dir := t.TempDir()
	port := strings.TrimPrefix(testkit.FreeAddr(t), "127.0.0.1:")
	prov.SetClient("bw-app", "app-secret-5e1d", "http://127.0.0.1:"+port)
	file := writeFile(t, dir, "breakwater.yaml", strings.NewReplacer("%API%", prov.API.URL, "%TOKEN%", prov.Token.URL,
		"%DIR%", dir, "%PORT%", port).Replace(loginConfig))
	tokenFile := filepath.Join(dir, "mail.token")

	// A redirect whose state is not ours is refused (400), and the login
	// keeps waiting: any local process or web page can send one (issue 19,
	// defect 15: it ended the login, exit 1).
	cmd := exec.Command(binary, "oauth2", "login", "-config", file, "-upstream", "mail")
	cmd.Env = env()
	p := testkit.Start(t, cmd)
	p.WaitFor(t, 15*time.Second, "the URL to open", func() bool { return strings.Contains(p.Out.String(), "Waiting for the redirect") })
	for _, q := range []string{"code=x&state=forged", "error=access_denied", "code=x"} {
		resp, err := http.Get("http://127.0.0.1:" + port + "/callback?" + q)
		if err != nil {
			t.Fatalf("forged redirect %s: %v (login gone?)\n%s", q, err, p.Out.String())
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("forged redirect %s: %d, want 400", q, resp.StatusCode)
		}
	}
	select {
	case <-p.Exited():
		t.Fatalf("a forged redirect ended the login (exit %d)\n%s", p.Cmd.ProcessState.ExitCode(), p.Out.String())
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := os.Stat(tokenFile); err == nil {
		t.Fatal("a forged redirect wrote a token file")
	}

	// The real flow, in the same login, the test's HTTP client as the browser.
	authURL := regexp.MustCompile(`http://\S+/authorize\?\S+`).FindString(p.Out.String())
	if !strings.Contains(authURL, "code_challenge_method=S256") || !strings.Contains(authURL, "state=") {
		t.Fatalf("login URL %q: want PKCE (S256) and a state", authURL)
	}
	resp, err := http.Get(authURL) // follows the redirect to the one-shot listener
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := p.ExitCode(t, 15*time.Second); resp.StatusCode != 200 || code != 0 {
		t.Fatalf("login: browser got %d, exit %d\n%s", resp.StatusCode, code, p.Out.String())
	}
	st, err := os.Stat(tokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st, err)
	}
	first, _ := os.ReadFile(tokenFile)
	refresh1 := strings.TrimSpace(string(first))
	if refresh1 == "" || strings.Contains(p.Out.String(), refresh1) {
		t.Fatalf("refresh token empty or printed:\n%s", p.Out.String())
	}

	// breakwater now serves with it; the server rotates refresh tokens, and
	// each rotation is written back before use.
	cmd = exec.Command(binary, "-config", file)
	cmd.Env = env()
	run := testkit.Start(t, cmd)
	data, _ := run.WaitStarted(t, 15*time.Second)
	for i := range 3 {
		resp, err := http.Get("http://" + data + "/inbox")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d with the refresh_token grant: %d\n%s", i, resp.StatusCode, run.Out.String())
		}
		time.Sleep(1200 * time.Millisecond) // past the renewal of a 2 s token
	}
	now, _ := os.ReadFile(tokenFile)
	st, _ = os.Stat(tokenFile)
	if strings.TrimSpace(string(now)) == refresh1 || st.Mode().Perm() != 0o600 {
		t.Errorf("the rotated refresh token was not written back (mode %v)", st.Mode().Perm())
	}
	for _, tok := range append(prov.Tokens(), refresh1, strings.TrimSpace(string(now))) {
		if strings.Contains(run.Out.String(), tok) {
			t.Errorf("the log shows a token (%.6s…)", tok)
		}
	}
}

// TestOAuth2LoginTimeout: with no redirect, login gives up after -timeout
// (exit 1, saying so); forged redirects meanwhile do not end it sooner.
func TestOAuth2LoginTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	prov := newProvider(t, "other", "unused", time.Minute)
	dir := t.TempDir()
	port := strings.TrimPrefix(testkit.FreeAddr(t), "127.0.0.1:")
	file := writeFile(t, dir, "breakwater.yaml", strings.NewReplacer("%API%", prov.API.URL, "%TOKEN%", prov.Token.URL,
		"%DIR%", dir, "%PORT%", port).Replace(loginConfig))
	cmd := exec.Command(binary, "oauth2", "login", "-config", file, "-upstream", "mail", "-timeout", "2s")
	cmd.Env = env()
	start := time.Now()
	p := testkit.Start(t, cmd)
	p.WaitFor(t, 15*time.Second, "the URL to open", func() bool { return strings.Contains(p.Out.String(), "Waiting for the redirect") })
	if resp, err := http.Get("http://127.0.0.1:" + port + "/callback?code=x&state=forged"); err == nil {
		resp.Body.Close()
	}
	code := p.ExitCode(t, 15*time.Second)
	took := time.Since(start)
	t.Logf("login with -timeout 2s: exit %d after %s", code, took.Round(time.Millisecond))
	if code != 1 || took < 2*time.Second || !strings.Contains(p.Out.String(), "no redirect arrived in time") {
		t.Errorf("exit %d after %s, want 1 after the 2 s timeout\n%s", code, took, p.Out.String())
	}
}
