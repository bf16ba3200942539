package main

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

const remoteAdminConfig = `version: 1
listen: 127.0.0.1:0
admin: { listen: "0.0.0.0:0", allow_remote: true, token: "${BW_E2E_ADMIN_TOKEN}" }
upstreams:
  up: { url: "%UP%" }
routes:
  - { name: all, match: { path_prefix: / }, upstream: up, circuit_breaker: { delay: 1m } }
`

// TestAdminTokenFollowsTheBoundAddressE2E (issue 11, defect 4): the admin
// listener bound on every interface with a token; a reload of a file that
// moves it to loopback and drops the token is refused (400 naming
// admin.token), and changes still need the token.
func TestAdminTokenFollowsTheBoundAddressE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const token = "e2e-adm1n-T0ken"
	dir := t.TempDir()
	file := filepath.Join(dir, "breakwater.yaml")
	testkit.ReplaceFile(t, file, strings.Replace(remoteAdminConfig, "%UP%", testkit.DeadURL(t), 1))
	cmd := exec.Command(binary, "-config", file)
	cmd.Env = env("BW_E2E_ADMIN_TOKEN=" + token)
	p := testkit.Start(t, cmd)
	_, adminAddr := p.WaitStarted(t, 15*time.Second)
	_, port, err := net.SplitHostPort(adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	admin := "http://127.0.0.1:" + port
	client := &http.Client{Timeout: 5 * time.Second}
	post := func(path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", admin+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/breakers/all?state=open", ""); code != 401 {
		t.Fatalf("POST without the token: %d %s, want 401", code, body)
	}

	testkit.ReplaceFile(t, file, strings.NewReplacer(`"0.0.0.0:0", allow_remote: true, token: "${BW_E2E_ADMIN_TOKEN}"`, `"localhost:0"`,
		"%UP%", testkit.DeadURL(t)).Replace(remoteAdminConfig))
	code, body := post("/reload", "Bearer "+token)
	if code != 400 || !strings.Contains(body, "admin.token: ") {
		t.Errorf("reload dropping the token: %d %s, want 400 naming admin.token", code, body)
	}
	if code, body := post("/breakers/all?state=open", ""); code != 401 {
		t.Errorf("POST without the token after that reload: %d %s, want 401", code, body)
	}
	if code, body := post("/breakers/all?state=closed", "Bearer "+token); code != 200 {
		t.Errorf("POST with the token: %d %s, want 200", code, body)
	}
	if strings.Contains(p.Out.String(), token) {
		t.Error("the token reached the log")
	}
}
