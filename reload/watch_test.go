package reload

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// noPoll leaves a watch to its directory events alone.
const noPoll = time.Hour

// watchCalls runs WatchFile and reports each call of changed on a channel.
func watchCalls(t *testing.T, path string, poll time.Duration) (<-chan struct{}, func()) {
	t.Helper()
	calls := make(chan struct{}, 16)
	stop := WatchFile(path, poll, zerolog.Nop(), func() { calls <- struct{}{} })
	t.Cleanup(stop)
	return calls, stop
}

func expectCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not seen within 10s", what)
	}
}

func expectNoCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
		t.Fatalf("%s: seen as a change", what)
	case <-time.After(4 * settle):
	}
}

func mustWrite(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWatchConfigMapSwap lays a directory out as a Kubernetes ConfigMap
// volume (config.yaml → ..data/config.yaml, ..data → ..2026_x) and
// updates it as the kubelet does: a new timestamped directory, a new
// symlink, renamed over ..data.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, body string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, name, "config.yaml"), body)
	}
	swap := func(name string) {
		t.Helper()
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01", "version: 1 # one\n")
	if err := os.Symlink("..2026_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	calls, _ := watchCalls(t, path, noPoll)

	version("..2026_02", "version: 1 # two\n")
	swap("..2026_02")
	expectCall(t, calls, "..data swapped to a new version")
	_ = os.RemoveAll(filepath.Join(dir, "..2026_01")) // the kubelet cleans up
	expectNoCall(t, calls, "the old version removed")

	version("..2026_03", "version: 1 # two\n")
	swap("..2026_03")
	expectNoCall(t, calls, "a swap to identical content")

	version("..2026_04", "version: 1 # four\n")
	swap("..2026_04")
	expectCall(t, calls, "a second swap")
}

// TestWatchEditorReplace: editors write a temporary file and rename it
// over the config; others truncate and write in place. Both are seen; a
// file that vanishes is not a change, its return with new content is.
func TestWatchEditorReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "breakwater.yaml")
	mustWrite(t, path, "version: 1 # one\n")
	calls, stop := watchCalls(t, path, noPoll)

	mustWrite(t, path+".swp", "version: 1 # two\n")
	if err := os.Rename(path+".swp", path); err != nil {
		t.Fatal(err)
	}
	expectCall(t, calls, "write-temp-then-rename")

	mustWrite(t, path, "version: 1 # three\n")
	expectCall(t, calls, "an in-place write")

	mustWrite(t, filepath.Join(dir, "other.yaml"), "unrelated")
	expectNoCall(t, calls, "another file in the directory")

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	expectNoCall(t, calls, "the file removed")
	mustWrite(t, path, "version: 1 # four\n")
	expectCall(t, calls, "the file back with new content")

	stop()
	mustWrite(t, path, "version: 1 # five\n")
	expectNoCall(t, calls, "a change after stop")
}

// TestWatchPollBackstop: a config reached through a symlink into another
// directory changes without any event in the watched one; the poll sees it.
func TestWatchPollBackstop(t *testing.T) {
	watched, elsewhere := t.TempDir(), t.TempDir()
	real := filepath.Join(elsewhere, "real.yaml")
	mustWrite(t, real, "version: 1 # one\n")
	path := filepath.Join(watched, "breakwater.yaml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	calls, _ := watchCalls(t, path, 200*time.Millisecond)
	mustWrite(t, real, "version: 1 # two\n")
	expectCall(t, calls, "a change seen only by polling")
}

const watchedConfig = `version: 1
upstreams:
  up: { url: "%UP%" }
routes:
  - name: first
    match: { path_prefix: /first }
    upstream: up
`

// TestReloaderWatch: a Reloader watching its file with a live proxy. A
// broken file is rejected (logged, counted, in Last) while the old routes
// keep serving; a good file is then picked up.
func TestReloaderWatch(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	defer up.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "breakwater.yaml")
	write := func(body string) {
		t.Helper()
		testkit.ReplaceFile(t, path, strings.ReplaceAll(body, "%UP%", up.URL))
	}
	write(watchedConfig)
	cfg, warns, err := config.Load(path, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	log := zerolog.New(&logs)
	obs := observe.NewFanout(observe.NewMetrics("test"), observe.NewHub())
	srv := proxy.New(log, obs)
	rl := New(path, config.Overrides{}, srv, obs, log)
	if err := rl.Start(cfg, warns); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(srv)
	defer front.Close()
	status := func(p string) int {
		t.Helper()
		resp, err := front.Client().Get(front.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	stop := rl.Watch(noPoll)
	defer stop()

	write(strings.Replace(watchedConfig, "    upstream: up\n", "    upstream: up\n    timeout: forever\n", 1))
	testkit.WaitFor(t, 10*time.Second, "the broken file rejected", func() bool { return rl.Last().Reason == "file changed" })
	last := rl.Last()
	if last.OK || len(last.Errors) != 1 || !strings.Contains(last.Errors[0], "routes[0].timeout") || last.Hash != cfg.Hash {
		t.Fatalf("broken file: %+v", last)
	}
	if !strings.Contains(logs.String(), "reload rejected") || !strings.Contains(logs.String(), "routes[0].timeout") {
		t.Errorf("the rejection was not logged: %s", logs.String())
	}
	if got := status("/first/x"); got != 200 {
		t.Fatalf("old route after a broken file: %d", got)
	}
	if srv.Config().Hash != cfg.Hash {
		t.Fatal("the broken file replaced the running config")
	}

	write(strings.ReplaceAll(watchedConfig, "first", "second"))
	testkit.WaitFor(t, 10*time.Second, "the good file picked up", func() bool { return rl.Last().OK && rl.Last().Reason == "file changed" })
	if got := status("/second/x"); got != 200 {
		t.Errorf("new route: %d", got)
	}
	if got := status("/first/x"); got != 404 {
		t.Errorf("removed route: %d, want 404", got)
	}
}
