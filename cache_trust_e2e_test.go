package main

// End-to-end tests of SPEC Part 3 "Cache and identity" (issue 19, item 1)
// and of the shared cache across replicas reached under different names
// (item 19), against the built binary.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// trustAnswer is what a client got: status, cache result and body.
type trustAnswer struct {
	status     int
	cache, who string
}

func (a trustAnswer) String() string {
	return fmt.Sprintf("%d %s %q", a.status, a.cache, a.who)
}

// trustGet sends a GET to url with host as its Host ("" = the URL's) and
// the client key ("" = anonymous).
func trustGet(t *testing.T, url, host, key string) trustAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return trustAnswer{resp.StatusCode, resp.Header.Get("X-Breakwater-Cache"), string(body)}
}

// startConfig starts breakwater with cfgFile on two free loopback ports.
func startConfig(t *testing.T, cfgFile string) *testkit.Breakwater {
	t.Helper()
	return testkit.StartBreakwater(t, 15*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(binary, "-config", cfgFile, "-listen", listen, "-admin", admin)
		cmd.Env = env()
		return cmd
	})
}

// identityCacheSetup issues keys for alice and bob and starts breakwater
// with routes whose cache sits behind client_auth. The upstream answers
// with the X-Client-Id it received (its body and an echo header); a path
// under /slow/ waits for gate to close first.
func identityCacheSetup(t *testing.T, gate <-chan struct{}) (bw *testkit.Breakwater, up *testkit.Upstream, keys map[string]string, cfgFile string) {
	t.Helper()
	up = testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/slow/") {
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
		}
		id := r.Header.Get("X-Client-Id")
		w.Header().Set("X-Seen-Client-Id", id)
		_, _ = io.WriteString(w, id)
	})
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "clients.yaml")
	keys = map[string]string{}
	for _, id := range []string{"alice", "bob"} {
		out, err := exec.Command(binary, "keys", "new", "-id", id, "-tier", "std", "-file", keysFile).Output()
		if err != nil {
			t.Fatalf("keys new: %v", err)
		}
		keys[id] = strings.TrimSpace(string(out))
	}
	cfgFile = writeFile(t, dir, "bw.yaml", fmt.Sprintf(`version: 1
log: { access_log: false }
clients: { keys_file: %s }
tiers:
  std: { max_concurrent: 50 }
upstreams:
  app: { url: %s }
defaults:
  retry: off
  circuit_breaker: off
  forward_client_id: X-Client-Id
routes:
  - name: required
    match: { path_prefix: /required/ }
    upstream: app
    client_auth: required
    cache: { ttl: 1m, vary: [Authorization] }   # vary does not help: the key header is gone by then
  - name: optional
    match: { path_prefix: /optional/ }
    upstream: app
    client_auth: optional
    cache: { ttl: 1m }
  - name: shared
    match: { path_prefix: /shared/ }
    upstream: app
    client_auth: required
    cache: { ttl: 1m, per_client: false }
`, keysFile, up.URL))
	return startConfig(t, cfgFile), up, keys, cfgFile
}

// One client's cached answer is never another's: on client_auth routes
// the key holds the caller's id (or "anonymous"), unless per_client: false
// says the answers are the same for every identified caller.
func TestCacheKeysOnCallerE2E(t *testing.T) {
	bw, up, keys, cfgFile := identityCacheSetup(t, nil)
	alice, bob := keys["alice"], keys["bob"]
	step := func(what, path, key, wantCache, wantWho string, wantHits int64) {
		t.Helper()
		got := trustGet(t, bw.URL+path, "", key)
		hits := up.Hits.Load()
		t.Logf("%-40s → %s (upstream requests so far: %d)", what, got, hits)
		if got.status != http.StatusOK || got.cache != wantCache || got.who != wantWho || hits != wantHits {
			t.Errorf("%s: got %s with %d upstream requests, want 200 %s %q with %d", what, got, hits, wantCache, wantWho, wantHits)
		}
	}

	step("required: alice", "/required/echo?x=1", alice, "miss", "alice", 1)
	step("required: bob, same URL", "/required/echo?x=1", bob, "miss", "bob", 2)
	step("required: alice again", "/required/echo?x=1", alice, "hit", "alice", 2)
	step("required: bob again", "/required/echo?x=1", bob, "hit", "bob", 2)

	step("optional: alice", "/optional/echo?x=1", alice, "miss", "alice", 3)
	step("optional: anonymous, same URL", "/optional/echo?x=1", "", "miss", "", 4)
	step("optional: bob, same URL", "/optional/echo?x=1", bob, "miss", "bob", 5)
	step("optional: anonymous again", "/optional/echo?x=1", "", "hit", "", 5)

	// per_client: false: one entry for every identified caller, by choice.
	step("per_client false: alice", "/shared/echo?x=1", alice, "miss", "alice", 6)
	step("per_client false: bob, same URL", "/shared/echo?x=1", bob, "hit", "alice", 6)

	out, code := runBinary(t, t.TempDir(), nil, "validate", "-config", cfgFile)
	t.Logf("validate (exit %d):\n%s", code, out)
	if code != 0 {
		t.Errorf("validate exit %d, want 0 (a warning is not an error)", code)
	}
	var warned []string
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "cache.per_client: warning:") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "routes[2]") {
		t.Errorf("want exactly one cache.per_client warning, for routes[2]; got %q", warned)
	}
}

// Coalescing follows the same key: concurrent misses of alice and bob for
// one URL each go upstream; a second alice waits for the first.
func TestCacheCoalescingKeysOnCallerE2E(t *testing.T) {
	gate := make(chan struct{})
	bw, up, keys, _ := identityCacheSetup(t, gate)
	url := bw.URL + "/required/slow/item"
	answers := make(map[string]trustAnswer)
	var mu sync.Mutex
	var wg sync.WaitGroup
	send := func(name, key string) {
		wg.Go(func() {
			a := trustGet(t, url, "", key)
			mu.Lock()
			answers[name] = a
			mu.Unlock()
		})
	}
	send("alice 1", keys["alice"])
	testkit.WaitFor(t, 10*time.Second, "alice's request upstream", func() bool { return up.InFlight.Load() == 1 })
	send("alice 2", keys["alice"])
	send("bob", keys["bob"])
	// Bob's miss must reach the upstream while alice's is still held there;
	// on a shared key it waits behind alice's instead.
	deadline := time.Now().Add(5 * time.Second)
	for up.InFlight.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	inFlight := up.InFlight.Load()
	time.Sleep(200 * time.Millisecond) // let alice 2 join alice 1's flight if it has not yet
	close(gate)
	wg.Wait()
	t.Logf("upstream requests in flight at once: %d; in all: %d; answers: %v", inFlight, up.Hits.Load(), answers)
	if inFlight != 2 {
		t.Errorf("upstream had %d requests in flight with alice's held, want 2 (alice's and bob's)", inFlight)
	}
	if got := up.Hits.Load(); got != 2 {
		t.Errorf("upstream saw %d requests, want 2: one per client, the second alice coalesced or a hit", got)
	}
	for name, want := range map[string]string{"alice 1": "alice", "alice 2": "alice", "bob": "bob"} {
		if a := answers[name]; a.status != http.StatusOK || a.who != want {
			t.Errorf("%s got %s, want 200 with %q", name, a, want)
		}
	}
}

// Item 19: replicas reached under different names (127.0.0.1:A and
// localhost:B) share one cache on the store, since the upstream gets the
// same request from both: B answers A's entry within ttl, and with the
// upstream down, serves A's entry stale.
func TestSharedCacheAcrossReplicaNamesE2E(t *testing.T) {
	rds := testkit.StartRedis(t)
	var down sync.Mutex
	upDown := false
	up := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		down.Lock()
		d := upDown
		down.Unlock()
		if d {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n)
	})
	dir := t.TempDir()
	cfgFile := writeFile(t, dir, "bw.yaml", fmt.Sprintf(`version: 1
log: { access_log: false }
store:
  redis: { url: %s, timeout: 1s }
  replicas: 2
upstreams:
  app: { url: %s }
defaults:
  retry: off
  circuit_breaker: off
routes:
  - name: fresh
    match: { path_prefix: /fresh/ }
    upstream: app
    cache: { ttl: 1m, shared: true }
  - name: stale
    match: { path_prefix: /stale/ }
    upstream: app
    cache: { ttl: 1s, stale_if_error: 5m, shared: true }
`, rds.URL, up.URL))
	var replicas []*testkit.Breakwater
	for range 2 {
		replicas = append(replicas, startConfig(t, cfgFile))
	}
	a, b := replicas[0], replicas[1]
	hostA := strings.TrimPrefix(a.URL, "http://")
	_, portB, _ := net.SplitHostPort(strings.TrimPrefix(b.URL, "http://"))
	hostB := "localhost:" + portB

	got := trustGet(t, a.URL+"/fresh/item", hostA, "")
	t.Logf("A (Host %s) /fresh/item → %s", hostA, got)
	if got.status != http.StatusOK || got.cache != "miss" {
		t.Fatalf("A: got %s, want 200 miss", got)
	}
	gotB := trustGet(t, b.URL+"/fresh/item", hostB, "")
	t.Logf("B (Host %s) /fresh/item → %s; upstream requests: %d", hostB, gotB, up.Hits.Load())
	if gotB.status != http.StatusOK || gotB.cache != "hit" || gotB.who != got.who || up.Hits.Load() != 1 {
		t.Errorf("B within ttl: got %s with %d upstream requests, want 200 hit %q with 1", gotB, up.Hits.Load(), got.who)
	}

	got = trustGet(t, a.URL+"/stale/item", hostA, "")
	t.Logf("A (Host %s) /stale/item → %s", hostA, got)
	if got.status != http.StatusOK || got.cache != "miss" {
		t.Fatalf("A: got %s, want 200 miss", got)
	}
	down.Lock()
	upDown = true
	down.Unlock()
	time.Sleep(1500 * time.Millisecond) // past the 1s ttl
	before := up.Hits.Load()
	gotB = trustGet(t, b.URL+"/stale/item", hostB, "")
	t.Logf("B (Host %s) /stale/item, upstream answering 503 → %s (upstream requests: %d)", hostB, gotB, up.Hits.Load()-before)
	if gotB.status != http.StatusOK || gotB.cache != "stale" || gotB.who != got.who {
		t.Errorf("B with the upstream down: got %s, want 200 stale %q (A's entry)", gotB, got.who)
	}
}
