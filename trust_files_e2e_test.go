package main

// End-to-end tests of the files a config names (SPEC Part 3, Trust:
// Files): ${file:…}, clients.keys_file and refresh_token_file must be
// regular files, keys new writes through a symlink, and a keys file
// anyone may write draws a warning.

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// fileVerdict is how long a command that reads a file the config names may
// take: reading a named pipe waits for a writer that never comes.
const fileVerdict = 10 * time.Second

func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	return path
}

// validateWithin runs `breakwater validate` on cfg and returns its exit
// code and output; it fails the test if validate still runs after
// fileVerdict.
func validateWithin(t *testing.T, dir, cfg string) (int, string) {
	t.Helper()
	p := startBinary(t, dir, "validate", "-config", cfg)
	code := p.ExitCode(t, fileVerdict)
	return code, p.Out.String()
}

// A named pipe (or a directory) where a file of secrets or keys belongs is
// a validation problem naming the field and the file, at once: reading it
// waited for a writer forever.
func TestFilesMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "fifo"))
	secret := writeFile(t, dir, "secret", "s3cret\n")
	link := filepath.Join(dir, "secret-link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	up := "http://127.0.0.1:9"
	cases := []struct {
		name, cfg string
		want      []string
	}{
		{"${file:} naming a named pipe", `version: 1
upstreams:
  up: { url: "` + up + `", headers: { set: { X-Key: "${file:` + fifo + `}" } } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`, []string{"upstreams.up.headers.set.X-Key", "${file:" + fifo + "}", "named pipe"}},
		{"${file:} naming a directory", `version: 1
upstreams:
  up: { url: "` + up + `", headers: { set: { X-Key: "${file:` + dir + `}" } } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`, []string{"upstreams.up.headers.set.X-Key", "${file:" + dir + "}", "directory"}},
		{"keys_file naming a named pipe", `version: 1
clients: { keys_file: ` + fifo + ` }
tiers: { free: { max_concurrent: 1 } }
upstreams: { up: { url: "` + up + `" } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up, client_auth: required }]
`, []string{"clients.keys_file", fifo, "named pipe"}},
		{"refresh_token_file naming a named pipe", `version: 1
upstreams:
  up:
    url: "` + up + `"
    auth: { oauth2: { token_url: "https://auth.example/token", client_id: id, grant: refresh_token, refresh_token_file: ` + fifo + ` } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`, []string{"upstreams.up.auth.oauth2.refresh_token_file", fifo, "named pipe"}},
		{"tls.ca_file naming a named pipe", `version: 1
upstreams: { up: { url: "https://127.0.0.1:9", tls: { ca_file: ` + fifo + ` } } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`, []string{"upstreams.up.tls.ca_file", "named pipe"}},
		{"${file:} naming a symlink to a regular file", `version: 1
upstreams:
  up: { url: "` + up + `", headers: { set: { X-Key: "${file:` + link + `}" } } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`, nil},
	}
	for i, c := range cases {
		cfg := writeFile(t, dir, "bw"+string(rune('a'+i))+".yaml", c.cfg)
		start := time.Now()
		code, out := validateWithin(t, dir, cfg)
		t.Logf("%s: exit %d after %s", c.name, code, time.Since(start).Round(time.Millisecond))
		if strings.Contains(out, "s3cret") {
			t.Errorf("%s: the secret is in validate's output", c.name)
		}
		if c.want == nil {
			if code != 0 {
				t.Errorf("%s: exit %d, want 0; output:\n%s", c.name, code, out)
			}
			continue
		}
		if code != 1 {
			t.Errorf("%s: exit %d, want 1; output:\n%s", c.name, code, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, out)
			}
		}
	}
}

// The config file itself a named pipe: validate refuses it at once (it
// read the pipe, waiting for a writer forever).
func TestConfigFileMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "breakwater.yaml"))
	code, out := validateWithin(t, dir, fifo)
	if code != 1 || !strings.Contains(out, "named pipe") || !strings.Contains(out, fifo) {
		t.Errorf("validate on a named pipe: exit %d, want 1 naming the file and the pipe:\n%s", code, out)
	}
}

// keys new refuses a keys file that is a named pipe at once, as validate
// does: it waited for a writer forever.
func TestKeysNewRefusesNamedPipe(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "clients.yaml"))
	p := startBinary(t, dir, "keys", "new", "-id", "alice", "-tier", "free", "-file", fifo)
	if code, out := p.ExitCode(t, fileVerdict), p.Out.String(); code != 1 || !strings.Contains(out, "named pipe") {
		t.Errorf("keys new on a named pipe: exit %d, want 1 naming it:\n%s", code, out)
	}
}

// A ${file:} turned into a named pipe while breakwater runs: the reload
// SIGHUP asks for is refused naming the file, the old config keeps
// serving, and SIGTERM still ends the process (a watcher or a reload
// stuck opening the pipe held it forever).
func TestReloadRefusesSecretTurnedNamedPipe(t *testing.T) {
	var key atomic.Value
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) { key.Store(r.Header.Get("X-Key")) })
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", "s3cret\n")
	cfg := writeFile(t, dir, "bw.yaml", `version: 1
log: { level: info }
upstreams:
  up: { url: "`+up.URL+`", headers: { set: { X-Key: "${file:`+secret+`}" } } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up }]
`)
	bw := testkit.StartBreakwater(t, 10*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(binary, "-config", cfg, "-listen", listen, "-admin", admin)
		cmd.Env = env()
		return cmd
	})
	fifo := mkfifo(t, filepath.Join(dir, "fifo"))
	if err := os.Rename(fifo, secret); err != nil {
		t.Fatal(err)
	}
	bw.Signal(t, syscall.SIGHUP)
	bw.WaitFor(t, fileVerdict, "the reload refused, naming the file", func() bool {
		out := bw.Out.String()
		return strings.Contains(out, "${file:"+secret+"}") && strings.Contains(out, "named pipe")
	})
	resp, err := http.Get(bw.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || key.Load() != "s3cret" {
		t.Errorf("after the refused reload: %d, upstream key as read at start: %t; want 200 from the old config", resp.StatusCode, key.Load() == "s3cret")
	}
	bw.Signal(t, syscall.SIGTERM)
	if code := bw.ExitCode(t, fileVerdict); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}

// keys new on a symlinked keys file writes the new client to the link's
// target and leaves the link a link (it replaced the link with a regular
// file, and the file breakwater read kept the old clients).
func TestKeysNewWritesThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	realDir := filepath.Join(dir, "secrets")
	if err := os.Mkdir(realDir, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(realDir, "clients.yaml")
	link := filepath.Join(dir, "clients.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alice", "bob"} { // the first creates the target, the second appends to it
		if out, code := runBinary(t, dir, nil, "keys", "new", "-id", id, "-tier", "free", "-file", link); code != 0 {
			t.Fatalf("keys new %s: exit %d\n%s", id, code, out)
		}
	}
	st, err := os.Lstat(link)
	if err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is no longer a symlink (%v, %v)", link, st.Mode(), err)
	}
	text, err := os.ReadFile(target)
	if err != nil || !strings.Contains(string(text), `id: "alice"`) || !strings.Contains(string(text), `id: "bob"`) {
		t.Errorf("the link's target holds:\n%s\n(%v); want alice and bob", text, err)
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(realDir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left next to the target: %v", left)
	}
}

// A keys file that group or others may write lets them add a client: a
// validate warning and a log line at start, naming the field and the file.
func TestKeysFileWritableByOthersWarns(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "clients.yaml")
	if out, code := runBinary(t, dir, nil, "keys", "new", "-id", "alice", "-tier", "free", "-file", keysFile); code != 0 {
		t.Fatalf("keys new: exit %d\n%s", code, out)
	}
	cfg := writeFile(t, dir, "bw.yaml", `version: 1
log: { level: info }
clients: { keys_file: `+keysFile+` }
tiers: { free: { max_concurrent: 1 } }
upstreams: { up: { url: "http://127.0.0.1:9" } }
routes: [{ name: r, match: { path_prefix: / }, upstream: up, client_auth: required }]
`)
	const warning = "writable by group or others"
	out, code := runBinary(t, dir, nil, "validate", "-config", cfg)
	if code != 0 || strings.Contains(out, warning) {
		t.Errorf("validate of a 0600 keys file: exit %d, want 0 and no warning:\n%s", code, out)
	}
	for _, mode := range []os.FileMode{0o666, 0o620} {
		if err := os.Chmod(keysFile, mode); err != nil {
			t.Fatal(err)
		}
		out, code = runBinary(t, dir, nil, "validate", "-config", cfg)
		if code != 0 || !strings.Contains(out, "clients.keys_file") || !strings.Contains(out, keysFile) || !strings.Contains(out, warning) {
			t.Errorf("validate of a %o keys file: exit %d, want 0 with a warning naming clients.keys_file and the file:\n%s", mode, code, out)
		}
	}
	bw := testkit.StartBreakwater(t, 10*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(binary, "-config", cfg, "-listen", listen, "-admin", admin)
		cmd.Env = env()
		return cmd
	})
	bw.WaitFor(t, 5*time.Second, "the warning logged at start", func() bool {
		for _, line := range strings.Split(bw.Out.String(), "\n") {
			if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "clients.keys_file") && strings.Contains(line, warning) {
				return true
			}
		}
		return false
	})
}
