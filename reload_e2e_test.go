package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

const e2eConfig = `version: 1
listen: 127.0.0.1:0
admin:
  listen: localhost:0
upstreams:
  echo:
    url: %UP%
    headers:
      set: { X-Config: "%NAME%", Authorization: "Bearer ${BW_E2E_SECRET}" }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: echo
`

// TestReloadE2E runs the built binary: a file change (written the way
// editors do) is picked up, SIGHUP reloads, a broken file is rejected
// while the old config keeps serving, and SIGTERM ends it with 0. The
// secret in headers.set never reaches its log.
func TestReloadE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const secret = "s3cr3t-TOKEN-value-123"
	dir := t.TempDir()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Config", r.Header.Get("X-Config"))
	}))
	defer up.Close()
	file := filepath.Join(dir, "breakwater.yaml")
	write := func(body string) {
		t.Helper()
		testkit.ReplaceFile(t, file, strings.NewReplacer("%UP%", up.URL).Replace(body))
	}
	config := func(name string) string { return strings.Replace(e2eConfig, "%NAME%", name, 1) }
	write(config("a"))

	cmd := exec.Command(binary, "-config", file)
	cmd.Env = append(os.Environ(), "BW_E2E_SECRET="+secret)
	p := testkit.Start(t, cmd)
	data, admin := p.WaitStarted(t, 15*time.Second)
	client := &http.Client{Timeout: 5 * time.Second}
	seen := func() string {
		resp, err := client.Get("http://" + data + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("data plane: %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Seen-Config")
	}
	type lastReload struct {
		OK     bool     `json:"ok"`
		Reason string   `json:"reason"`
		Errors []string `json:"errors"`
	}
	health := func() lastReload {
		resp, err := client.Get("http://" + admin + "/health")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h struct {
			LastReload lastReload `json:"last_reload"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&h)
		return h.LastReload
	}
	if got := seen(); got != "a" {
		t.Fatalf("first config: X-Seen-Config %q", got)
	}

	write(config("b"))
	p.WaitFor(t, 15*time.Second, "the changed file served", func() bool { return seen() == "b" })
	if h := health(); !h.OK || h.Reason != "file changed" {
		t.Errorf("after a file change: last_reload %+v", h)
	}

	p.Signal(t, syscall.SIGHUP)
	p.WaitFor(t, 15*time.Second, "the SIGHUP reload", func() bool { h := health(); return h.OK && h.Reason == "SIGHUP" })

	write(strings.Replace(config("c"), "upstream: echo", "upstream: nowhere", 1))
	p.WaitFor(t, 15*time.Second, "the broken file rejected", func() bool { h := health(); return !h.OK && h.Reason == "file changed" })
	if h := health(); len(h.Errors) != 1 || !strings.Contains(h.Errors[0], "routes[0].upstream") {
		t.Errorf("broken file: %+v", h)
	}
	if got := seen(); got != "b" {
		t.Errorf("after a broken file: X-Seen-Config %q, want b from the running config", got)
	}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`breakwater_config_reloads_total{result="failure"} 1`, `breakwater_config_reloads_total{result="success"} 2`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	p.Signal(t, syscall.SIGTERM)
	if code := p.ExitCode(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if strings.Contains(p.Out.String(), secret) {
		t.Error("the log shows the secret")
	}
	if !strings.Contains(p.Out.String(), "reload rejected") {
		t.Error("the rejected reload is not in the log")
	}
}
