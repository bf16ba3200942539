package admin_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/reload"
)

const echoConfig = `version: 1
upstreams:
  echo:
    url: {{UP}}
    headers:
      set: { X-Config: "%[1]s" }     # a secret: it does not change the config hash
      remove: [ "X-Drop-%[1]s" ]      # ... so the files differ in a non-secret too
routes:
  - name: main
    match: { path_prefix: / }
    upstream: echo
`

// TestReloadUnderLoad: 8 clients loop while the config flips 20+ times
// between two files that differ in a header the upstream echoes. Not one
// request fails, and every answer comes from one config or the other.
func TestReloadUnderLoad(t *testing.T) {
	e := newEnv(t, fmt.Sprintf(echoConfig, "a"))
	const clients = 8
	const reloads = 24
	var (
		stop       atomic.Bool
		wg         sync.WaitGroup
		total      atomic.Int64
		seen       [2]atomic.Int64
		failMu     sync.Mutex
		failures   []string
		clientDone = make(chan struct{})
	)
	fail := func(s string) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, s)
		}
	}
	client := e.data.Client()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				resp, err := client.Get(fmt.Sprintf("%s/c%d/%d", e.data.URL, c, i))
				if err != nil {
					fail(err.Error())
					continue
				}
				buf := make([]byte, 64)
				n, _ := resp.Body.Read(buf)
				resp.Body.Close()
				total.Add(1)
				switch got := resp.Header.Get("X-Seen-Config"); {
				case resp.StatusCode != 200:
					fail(fmt.Sprintf("status %d: %s", resp.StatusCode, buf[:n]))
				case got == "a":
					seen[0].Add(1)
				case got == "b":
					seen[1].Add(1)
				default:
					fail(fmt.Sprintf("answer from neither config: X-Seen-Config %q", got))
				}
			}
		}()
	}
	go func() { wg.Wait(); close(clientDone) }()

	start := time.Now()
	var hashes = map[string]bool{}
	for i := 1; i <= reloads; i++ {
		e.write(fmt.Sprintf(echoConfig, []string{"a", "b"}[i%2]))
		code, body := e.call("POST", "/reload", "")
		if code != 200 {
			t.Fatalf("reload %d: %d %s", i, code, body)
		}
		var ans reload.Result
		_ = json.Unmarshal(body, &ans)
		hashes[ans.Hash] = true
		time.Sleep(3 * time.Second / reloads) // spread the reloads over ≈3 s of load
	}
	stop.Store(true)
	<-clientDone
	elapsed := time.Since(start)

	if len(failures) > 0 {
		t.Fatalf("%d+ failed requests during reloads, e.g.: %q", len(failures), failures)
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Fatalf("answers: %d from config a, %d from config b; want both", seen[0].Load(), seen[1].Load())
	}
	if len(hashes) != 2 {
		t.Errorf("config hashes seen: %v, want the two files' two", hashes)
	}
	if got := e.metric("breakwater_config_reloads_total", map[string]string{"result": "success"}); got != reloads {
		t.Errorf("reloads_total{success} = %v, want %d", got, reloads)
	}
	if got := e.metric("breakwater_config_reloads_total", map[string]string{"result": "failure"}); got != 0 {
		t.Errorf("reloads_total{failure} = %v, want 0", got)
	}
	t.Logf("%d requests by %d clients over %s, %d reloads: %d from a, %d from b",
		total.Load(), clients, elapsed.Round(time.Millisecond), reloads, seen[0].Load(), seen[1].Load())
}

const stateConfig = `version: 1
upstreams:
  echo: { url: "{{UP}}" }
routes:
  - name: alpha
    match: { path_prefix: /alpha }
    upstream: echo
    retry: off
    circuit_breaker: { failure_threshold: %d, delay: 1m }
  - name: beta
    match: { path_prefix: /beta }
    upstream: echo
    timeout: %s
  - name: gamma
    match: { path_prefix: /gamma }
    upstream: echo
    rate_limit: { rate: 1/1h, burst: %d, key: none }
`

// TestReloadKeepsState: a reload that changes only another route keeps an
// open breaker open and a spent rate limiter spent; changing a policy's
// own settings gives that route a fresh one.
func TestReloadKeepsState(t *testing.T) {
	e := newEnv(t, fmt.Sprintf(stateConfig, 2, "10s", 3))
	reloadOK := func(yaml string) {
		t.Helper()
		e.write(yaml)
		if code, body := e.call("POST", "/reload", ""); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
	}

	// Open alpha's breaker with two upstream failures.
	for range 2 {
		if resp, _ := e.get("/alpha/fail"); resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "" {
			t.Fatalf("/alpha/fail: %d %q, want the upstream's 503", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
		}
	}
	if st := e.breaker("alpha").State; st != policy.Open {
		t.Fatalf("alpha after 2 failures: %s, want open", st)
	}
	// Spend gamma's burst of 3.
	for i := range 3 {
		if resp, _ := e.get("/gamma"); resp.StatusCode != 200 {
			t.Fatalf("/gamma #%d: %d, want 200", i+1, resp.StatusCode)
		}
	}
	if resp, _ := e.get("/gamma"); resp.StatusCode != 429 {
		t.Fatalf("/gamma #4: %d, want 429", resp.StatusCode)
	}

	// Change only beta.
	reloadOK(fmt.Sprintf(stateConfig, 2, "20s", 3))
	if got := e.srv.Config().Routes[1].Effective.Timeout.D(); got != 20*time.Second {
		t.Fatalf("beta timeout after reload: %s, want 20s (reload not applied)", got)
	}
	if st := e.breaker("alpha").State; st != policy.Open {
		t.Errorf("alpha after a reload of beta only: %s, want still open", st)
	}
	if resp, _ := e.get("/alpha/ok"); resp.StatusCode != 503 || resp.Header.Get("X-Breakwater-Error") != "circuit_open" {
		t.Errorf("/alpha/ok after reload: %d %q, want 503 circuit_open", resp.StatusCode, resp.Header.Get("X-Breakwater-Error"))
	}
	if g := e.breakerGauge("alpha"); g != "open" {
		t.Errorf("alpha gauge after reload: %s, want open", g)
	}
	if resp, _ := e.get("/gamma"); resp.StatusCode != 429 {
		t.Errorf("/gamma after a reload of beta only: %d, want 429 (tokens kept)", resp.StatusCode)
	}

	// Change alpha's threshold and gamma's burst: both start afresh.
	reloadOK(fmt.Sprintf(stateConfig, 3, "20s", 4))
	if st := e.breaker("alpha").State; st != policy.Closed {
		t.Errorf("alpha after its own thresholds changed: %s, want a fresh closed breaker", st)
	}
	if resp, _ := e.get("/alpha/ok"); resp.StatusCode != 200 {
		t.Errorf("/alpha/ok with a fresh breaker: %d, want 200", resp.StatusCode)
	}
	if g := e.breakerGauge("alpha"); g != "closed" {
		t.Errorf("alpha gauge with a fresh breaker: %s, want closed", g)
	}
	if resp, _ := e.get("/gamma"); resp.StatusCode != 200 {
		t.Errorf("/gamma with a fresh limiter: %d, want 200", resp.StatusCode)
	}
}

// TestBadReloadKeepsOldConfig: a broken file answers 400 with every
// problem, counts a failure, logs each problem, and the old routes keep
// serving; /health reports the failed reload and the running hash.
func TestBadReloadKeepsOldConfig(t *testing.T) {
	e := newEnv(t, fmt.Sprintf(echoConfig, "a"))
	hash := e.srv.Config().Hash
	e.write(`version: 1
upstreams:
  echo: { url: "{{UP}}" }
routes:
  - name: main
    match: { path_prefix: / }
    upstream: echo
    timeout: soon
    retyr: { attempts: 2 }
`)
	code, body := e.call("POST", "/reload", "")
	if code != 400 {
		t.Fatalf("bad reload: %d %s, want 400", code, body)
	}
	var ans struct {
		OK     bool     `json:"ok"`
		Hash   string   `json:"config_hash"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.OK || ans.Hash != hash || len(ans.Errors) != 2 {
		t.Fatalf("bad reload answer: %s; want ok false, the running hash %s and 2 errors", body, hash)
	}
	for i, want := range []string{"routes[0].timeout", "routes[0].retyr"} {
		if !strings.Contains(ans.Errors[i], want) || !strings.HasPrefix(ans.Errors[i], e.file+":") {
			t.Errorf("error %d = %q, want FILE:LINE: %s…", i, ans.Errors[i], want)
		}
		if !e.logged("reload rejected: " + ans.Errors[i]) {
			t.Errorf("error %q not logged", ans.Errors[i])
		}
	}
	if got := e.metric("breakwater_config_reloads_total", map[string]string{"result": "failure"}); got != 1 {
		t.Errorf("reloads_total{failure} = %v, want 1", got)
	}
	if resp, _ := e.get("/still/served"); resp.StatusCode != 200 || resp.Header.Get("X-Seen-Config") != "a" {
		t.Errorf("after a bad reload: %d X-Seen-Config %q, want 200 from the old config", resp.StatusCode, resp.Header.Get("X-Seen-Config"))
	}
	var health struct {
		ConfigHash string         `json:"config_hash"`
		LastReload *reload.Result `json:"last_reload"`
	}
	_, hb := e.call("GET", "/health", "")
	_ = json.Unmarshal(hb, &health)
	if health.ConfigHash != hash || health.LastReload == nil || health.LastReload.OK || len(health.LastReload.Errors) != 2 {
		t.Errorf("/health after a bad reload: %s", hb)
	}
	if ts := e.metric("breakwater_config_last_reload_success_timestamp_seconds", nil); ts <= 0 {
		t.Errorf("last success timestamp %v, want the start-up load's", ts)
	}

	// A good file again: 200 with the summary, a success, a new hash.
	before := e.metric("breakwater_config_last_reload_success_timestamp_seconds", nil)
	e.write(fmt.Sprintf(echoConfig, "b"))
	code, body = e.call("POST", "/reload", "")
	if code != 200 || !strings.Contains(string(body), `"summary"`) || !strings.Contains(string(body), `"ok": true`) {
		t.Fatalf("good reload: %d %s", code, body)
	}
	if resp, _ := e.get("/x"); resp.Header.Get("X-Seen-Config") != "b" {
		t.Errorf("after a good reload: X-Seen-Config %q, want b", resp.Header.Get("X-Seen-Config"))
	}
	if ts := e.metric("breakwater_config_last_reload_success_timestamp_seconds", nil); ts < before {
		t.Errorf("last success timestamp went from %v to %v", before, ts)
	}
	if e.srv.Config().Hash == hash {
		t.Error("config hash unchanged by a changed file")
	}
}
