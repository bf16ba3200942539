package main

// End-to-end tests of client identity and tiers against the built binary.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// seenRequest is what the upstream saw of one request.
type seenRequest struct{ auth, clientID string }

// clientsSetup issues keys for a free and a paid client with the binary
// itself, and starts breakwater in front of an upstream that records the
// headers it receives. routesBefore are routes matched before the
// catch-all client_auth: required one.
func clientsSetup(t *testing.T, routesBefore string) (bw *testkit.Breakwater, keys map[string]string, seen func() []seenRequest, dir string) {
	t.Helper()
	var mu sync.Mutex
	var got []seenRequest
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seenRequest{strings.Join(r.Header.Values("Authorization"), ", "), r.Header.Get("X-Client-Id")})
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	dir = t.TempDir()
	keysFile := filepath.Join(dir, "clients.yaml")
	keys = map[string]string{}
	for _, c := range [][2]string{{"alice", "free"}, {"acme", "paid"}} {
		out, err := exec.Command(binary, "keys", "new", "-id", c[0], "-tier", c[1], "-file", keysFile).Output()
		if err != nil {
			t.Fatalf("keys new: %v", err)
		}
		keys[c[0]] = strings.TrimSpace(string(out))
	}
	cfg := fmt.Sprintf(`version: 1
log: { level: info }
clients: { keys_file: %s }
tiers:
  free: { rate_limits: [3/2s, 5/1h], max_concurrent: 2, priority: low }
  paid: { rate_limits: [600/1m], max_concurrent: 20, priority: high }
upstreams:
  app: { url: %s }
routes:
%s  - name: mcp
    match: { path_prefix: / }
    upstream: app
    client_auth: required
    forward_client_id: X-Client-Id
    rate_limit: { key: client }
`, keysFile, up.URL, routesBefore)
	cfgFile := filepath.Join(dir, "bw.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bw = testkit.StartBreakwater(t, 10*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(binary, "-config", cfgFile, "-listen", listen, "-admin", admin)
		cmd.Env = env()
		return cmd
	})
	return bw, keys, func() []seenRequest { mu.Lock(); defer mu.Unlock(); return append([]seenRequest(nil), got...) }, dir
}

func call(t *testing.T, url, key string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/tools", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("X-Client-Id", "spoofed")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// The Bar: a free client with rate_limits [3/2s, 5/1h]: 3 pass,
// the 4th gets 429 naming the 2 s window; after 2 s two more pass, then
// 429 naming the 1 h window; the paid client is unaffected throughout.
func TestClientTiersBar(t *testing.T) {
	bw, keys, seen, _ := clientsSetup(t, "")
	free, paid := keys["alice"], keys["acme"]
	paidOK := func(when string) {
		t.Helper()
		if resp := call(t, bw.URL, paid); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: paid client got %d", when, resp.StatusCode)
		}
	}
	start := time.Now()
	for i := range 3 {
		if resp := call(t, bw.URL, free); resp.StatusCode != http.StatusOK {
			t.Fatalf("free request %d: %d, want 200", i+1, resp.StatusCode)
		}
		paidOK(fmt.Sprintf("after free request %d", i+1))
	}
	resp := call(t, bw.URL, free)
	if time.Since(start) > 1500*time.Millisecond {
		t.Skip("the machine is too slow to tell the 2 s window apart in time")
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-Breakwater-Error") != "rate_limited" {
		t.Fatalf("4th free request: %d %q, want 429 rate_limited", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, `"free/2s";r=0;t=`) {
		t.Errorf("4th: RateLimit = %q, want the 2s window", got)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" && ra != "2" {
		t.Errorf("4th: Retry-After = %q, want the 2s window's 1 or 2", ra)
	}
	if got, want := resp.Header.Get("RateLimit-Policy"), `"free/2s";q=3;w=2, "free/1h";q=5;w=3600`; got != want {
		t.Errorf("RateLimit-Policy = %q, want %q", got, want)
	}
	paidOK("after the 4th free request")

	time.Sleep(2100 * time.Millisecond)
	for i := range 2 {
		if resp := call(t, bw.URL, free); resp.StatusCode != http.StatusOK {
			t.Fatalf("after 2s, free request %d: %d, want 200", i+1, resp.StatusCode)
		}
	}
	resp = call(t, bw.URL, free)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("6th free request: %d, want 429", resp.StatusCode)
	}
	if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, `"free/1h";r=0;t=`) {
		t.Errorf("6th: RateLimit = %q, want the 1h window", got)
	}
	if ra := resp.Header.Get("Retry-After"); ra < "700" || len(ra) != 3 {
		t.Errorf("6th: Retry-After = %q, want about 718 (one token of 5/1h)", ra)
	}
	paidOK("after the 6th free request")

	// Upstream saw 5 free and 5 paid requests, never a key, and the
	// client id breakwater vouches for rather than the spoofed one.
	got := seen()
	if len(got) != 10 {
		t.Fatalf("upstream saw %d requests, want 10", len(got))
	}
	ids := map[string]int{}
	for _, s := range got {
		if s.auth != "" {
			t.Errorf("upstream received an Authorization header")
		}
		ids[s.clientID]++
	}
	if ids["alice"] != 5 || ids["acme"] != 5 {
		t.Errorf("upstream saw client ids %v, want alice 5 and acme 5", ids)
	}
	// The access log names the client, never its key.
	testkit.WaitFor(t, 5*time.Second, "access log lines", func() bool { return strings.Contains(bw.Out.String(), `"client":"alice"`) })
	if out := bw.Out.String(); strings.Contains(out, free) || strings.Contains(out, paid) {
		t.Error("a client key appears in breakwater's output")
	}
	// /routes shows the tiers' usage.
	r, err := http.Get(bw.Admin + "/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var routes struct {
		Tiers []struct {
			Name       string   `json:"name"`
			Clients    int      `json:"clients"`
			Rejected   uint64   `json:"rejected"`
			RejectedBy []uint64 `json:"rejected_by_window"`
		} `json:"tiers"`
	}
	if err := json.NewDecoder(r.Body).Decode(&routes); err != nil {
		t.Fatal(err)
	}
	if len(routes.Tiers) != 2 || routes.Tiers[0].Name != "free" || routes.Tiers[0].Rejected != 2 || routes.Tiers[0].Clients != 1 {
		t.Errorf("/routes tiers = %+v, want free with 1 client and 2 refusals", routes.Tiers)
	}
}

// A missing, unknown or disabled key gets 401 unauthorized, in JSON-RPC
// form for a JSON-RPC request, and nothing reaches the upstream. A keys
// file edited to a bad state is refused by the reload and the old keys
// keep working.
func TestClientAuthRefusesAndReloads(t *testing.T) {
	bw, keys, seen, dir := clientsSetup(t, "")
	for name, key := range map[string]string{"missing": "", "unknown": "bwk_not-a-key"} {
		resp := call(t, bw.URL, key)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Breakwater-Error") != "unauthorized" ||
			resp.Header.Get("WWW-Authenticate") != `Bearer realm="breakwater"` {
			t.Errorf("%s key: %d %q %q, want 401 unauthorized with WWW-Authenticate", name, resp.StatusCode,
				resp.Header.Get("X-Breakwater-Error"), resp.Header.Get("WWW-Authenticate"))
		}
	}
	req, _ := http.NewRequest(http.MethodPost, bw.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":7,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rpc struct {
		ID    int `json:"id"`
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rpc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || rpc.ID != 7 || rpc.Error.Code != -31401 {
		t.Errorf("JSON-RPC without a key: %d %+v, want 401 with code -31401 for id 7", resp.StatusCode, rpc)
	}
	if n := len(seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want none", n)
	}

	// Disable alice by editing the file: the watch reloads it.
	keysFile := filepath.Join(dir, "clients.yaml")
	text, _ := os.ReadFile(keysFile)
	disabled := strings.Replace(string(text), `id: "alice", tier: "free",`, `id: "alice", tier: "free", disabled: true,`, 1)
	testkit.ReplaceFile(t, keysFile, disabled)
	testkit.WaitFor(t, 15*time.Second, "alice disabled by the reload", func() bool {
		return call(t, bw.URL, keys["alice"]).StatusCode == http.StatusUnauthorized
	})
	// A broken keys file is refused: acme's key still works.
	testkit.ReplaceFile(t, keysFile, disabled+"  - { id: broken, tier: gold, key_sha256: xyz }\n")
	testkit.WaitFor(t, 15*time.Second, "the bad keys file rejected", func() bool {
		return strings.Contains(bw.Out.String(), `clients.yaml:5: clients[2].tier: no tier named \"gold\"`)
	})
	if resp := call(t, bw.URL, keys["acme"]); resp.StatusCode != http.StatusOK {
		t.Errorf("after a bad keys file, acme got %d, want 200 (old keys kept)", resp.StatusCode)
	}
	// validate reports the keys file's problems with FILE:LINE.
	out, code := runBinary(t, dir, nil, "validate", "-config", filepath.Join(dir, "bw.yaml"))
	if code != 1 || !strings.Contains(out, `clients.yaml:5: clients[2].key_sha256: want the key's SHA-256`) {
		t.Errorf("validate: exit %d, output:\n%s", code, out)
	}
}

// A client's key never leaves breakwater, even on a client_auth: none
// route: a known key is removed from every value of the key header, while
// an Authorization that is not a breakwater key passes to the upstream.
func TestClientKeyRemovedOnOpenRoute(t *testing.T) {
	bw, keys, seen, _ := clientsSetup(t, `  - name: open
    match: { path_prefix: /open }
    upstream: app
    client_auth: none
`)
	for _, c := range []struct {
		name string
		sent []string
		want string
	}{
		{"a known key", []string{"Bearer " + keys["alice"]}, ""},
		{"a known key, lower-case scheme", []string{"bearer " + keys["acme"]}, ""},
		{"a known key after another credential", []string{"Bearer someone-elses-token", "Bearer " + keys["alice"]}, "Bearer someone-elses-token"},
		{"another service's token", []string{"Bearer someone-elses-token"}, "Bearer someone-elses-token"},
		{"a key breakwater does not know", []string{"Bearer bwk_not-a-known-key"}, "Bearer bwk_not-a-known-key"},
	} {
		before := len(seen())
		req, _ := http.NewRequest(http.MethodGet, bw.URL+"/open/x", nil)
		req.Header["Authorization"] = c.sent
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := seen()
		if resp.StatusCode != http.StatusOK || len(got) != before+1 {
			t.Fatalf("%s: %d, upstream saw %d requests; want 200 and one", c.name, resp.StatusCode, len(got)-before)
		}
		if a := got[before].auth; a != c.want {
			for _, k := range keys {
				a = strings.ReplaceAll(a, k, "bwk_[the client's key]")
			}
			t.Errorf("%s: upstream saw Authorization %q, want %q", c.name, a, c.want)
		}
	}
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skip("no /proc: cannot read RSS")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kib)
			return kib
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Random keys, valid or not, grow nothing: a million requests (100,000
// unless BREAKWATER_MILLION=1; skipped with -short) each with a new random
// key leave the binary's RSS within 10 MiB of where it was after warm-up.
func TestRandomClientKeysKeepMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	total := 100_000
	if os.Getenv("BREAKWATER_MILLION") == "1" {
		total = 1_000_000
	}
	bw, _, seen, _ := clientsSetup(t, "")
	const workers = 8
	send := func(n int) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				defer client.CloseIdleConnections()
				for i := w; i < n; i += workers {
					req, _ := http.NewRequest(http.MethodGet, bw.URL+"/tools", nil)
					req.Header.Set("Authorization", fmt.Sprintf("Bearer bwk_%016x%016x", uint64(i)*0x9e3779b97f4a7c15, rand.Uint64()))
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						t.Errorf("random key: %d, want 401", resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	send(20_000) // warm-up: pools, buffers and the runtime reach their working size
	pid := bw.Cmd.Process.Pid
	before := rssKiB(t, pid)
	start := time.Now()
	send(total)
	after := rssKiB(t, pid)
	t.Logf("%d requests with random keys in %s: RSS %d KiB → %d KiB (%+d KiB)", total, time.Since(start).Round(time.Millisecond), before, after, after-before)
	if after-before > 10<<10 {
		t.Errorf("RSS grew by %d KiB, want at most 10 MiB", after-before)
	}
	if n := len(seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want none", n)
	}
}
