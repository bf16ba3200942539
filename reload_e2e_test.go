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
	"sync"
	"syscall"
	"testing"
	"time"
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
		t.Skip("builds the binary")
	}
	const secret = "s3cr3t-TOKEN-value-123"
	dir := t.TempDir()
	bin := filepath.Join(dir, "breakwater")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Config", r.Header.Get("X-Config"))
	}))
	defer up.Close()
	file := filepath.Join(dir, "breakwater.yaml")
	write := func(body string) {
		t.Helper()
		body = strings.NewReplacer("%UP%", up.URL).Replace(body)
		if err := os.WriteFile(file+".tmp", []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
	}
	config := func(name string) string { return strings.Replace(e2eConfig, "%NAME%", name, 1) }
	write(config("a"))

	cmd := exec.Command(bin, "-config", file)
	cmd.Env = append(os.Environ(), "BW_E2E_SECRET="+secret)
	var stderr reloadE2ELog
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("breakwater's log:\n%s", stderr.String())
		}
	}()

	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("breakwater exited (%v) waiting for: %s", err, what)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("within 15s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var data, admin string
	poll("the start-up line", func() bool {
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, "breakwater started") {
				var l struct{ Listen, Admin string }
				_ = json.Unmarshal([]byte(line), &l)
				data, admin = l.Listen, l.Admin
				return data != "" && admin != ""
			}
		}
		return false
	})
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
	poll("the changed file served", func() bool { return seen() == "b" })
	if h := health(); !h.OK || h.Reason != "file changed" {
		t.Errorf("after a file change: last_reload %+v", h)
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll("the SIGHUP reload", func() bool { h := health(); return h.OK && h.Reason == "SIGHUP" })

	write(strings.Replace(config("c"), "upstream: echo", "upstream: nowhere", 1))
	poll("the broken file rejected", func() bool { h := health(); return !h.OK && h.Reason == "file changed" })
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

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15s after SIGTERM")
	}
	if strings.Contains(stderr.String(), secret) {
		t.Error("the log shows the secret")
	}
	if !strings.Contains(stderr.String(), "reload rejected") {
		t.Error("the rejected reload is not in the log")
	}
}

// reloadE2ELog collects the child's stderr while the test reads it.
type reloadE2ELog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *reloadE2ELog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *reloadE2ELog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
