package dashboard_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// chromiumPath is Debian's chromium, which `make browser-deps` installs;
// a chromium elsewhere on PATH does too.
const chromiumPath = "/usr/bin/chromium"

// skipBrowserEnv lets a developer without root skip the browser test.
const skipBrowserEnv = "BREAKWATER_SKIP_BROWSER"

// screenshotEnv, when set to a path (x.png), also saves the laptop
// screenshot there and the phone one as x-phone.png, to look at them; the
// test's own copies are in t.TempDir().
const screenshotEnv = "BREAKWATER_DASHBOARD_SCREENSHOT"

const browserConfig = `version: 1
listen: 127.0.0.1:0
admin:
  listen: localhost:0
  token: ${BW_DASH_TOKEN}
upstreams:
  flaky:
    url: %FLAKY%
    quota: { rate: 600/1m, burst: 50 }
  steady:
    url: %STEADY%
    health_check: { path: /health, interval: 1s, timeout: 500ms }
routes:
  - name: flaky-api
    match: { path_prefix: /flaky/ }
    upstream: flaky
    retry: off
    circuit_breaker: { failure_threshold: 3, delay: 5m }
    bulkhead: { max_concurrent: 8 }
    rate_limit: { rate: 1000/1s, burst: 1000 }
  - name: steady-api
    match: { path_prefix: / }
    upstream: steady
    cache: { ttl: 1m }
`

// TestDashboardInBrowser runs the built binary with a flaky upstream and
// drives the dashboard in headless Chromium: the breaker opening shows as
// OPEN without a reload (pushed by /events), closing it from the page
// needs the admin token and a confirmation, and the page is free of CSP
// violations and script errors, on a laptop and on a phone.
func TestDashboardInBrowser(t *testing.T) {
	chromium := findChromium(t)
	start := time.Now()
	dir := t.TempDir()
	const token = "dash-T0ken-for-the-test"

	var failing atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer flaky.Close()
	steady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "steady")
	}))
	defer steady.Close()

	bin, err := testkit.BuildBinary(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("%FLAKY%", flaky.URL, "%STEADY%", steady.URL).Replace(browserConfig)
	file := filepath.Join(dir, "breakwater.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bw := startBreakwater(t, bin, file, "BW_DASH_TOKEN="+token)
	data, adminURL := bw.data, bw.admin
	t.Logf("breakwater up after %s", time.Since(start).Round(time.Millisecond))

	client := &http.Client{Timeout: 5 * time.Second}
	send := func(path string) *http.Response {
		t.Helper()
		resp, err := client.Get(data + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// Some healthy traffic, and a cache hit on the steady route.
	for i := range 4 {
		send(fmt.Sprintf("/flaky/ok/%d", i))
		send("/cached")
	}

	ctx, messages := startBrowser(t, chromium, dir)
	step := stepper(t, ctx)
	breaker := `[data-breaker="flaky-api"]`

	step("open the dashboard", 15*time.Second,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(adminURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-conn="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(breaker+`[data-state="closed"] .badge.state`)),
		chromedp.WaitVisible(chromedp.CSS(`#token`)), // admin.token is set: the page asks for it
	)
	if got := text(t, ctx, breaker+` .badge.state`); got != "CLOSED" {
		t.Errorf("breaker label before the failures: %q, want CLOSED", got)
	}

	// The upstream goes down; traffic opens the breaker (3 failures).
	failing.Store(true)
	var opened time.Time
	for i := 0; opened.IsZero(); i++ {
		if i == 20 {
			t.Fatal("the breaker did not open after 20 failing requests")
		}
		if resp := send(fmt.Sprintf("/flaky/down/%d", i)); resp.Header.Get("X-Breakwater-Error") == "circuit_open" {
			opened = time.Now()
		}
	}
	step("see the breaker OPEN without a reload", 3*time.Second,
		chromedp.WaitVisible(chromedp.CSS(breaker+`[data-state="open"] .badge.state`)),
		// Transitions come only from /events: this proves the push.
		chromedp.WaitVisible(chromedp.CSS(breaker+` .transitions li`)),
		// The event re-reads /breakers for the time left.
		chromedp.WaitVisible(chromedp.CSS(breaker+` .countdown`)),
	)
	t.Logf("page showed OPEN %s after the breaker opened", time.Since(opened).Round(time.Millisecond))
	if got := text(t, ctx, breaker+` .badge.state`); got != "OPEN" {
		t.Errorf("breaker label: %q, want OPEN", got)
	}
	if got := text(t, ctx, breaker+` .transitions li`); !strings.Contains(got, "CLOSED → OPEN") {
		t.Errorf("latest transition %q, want CLOSED → OPEN", got)
	}
	if got := text(t, ctx, breaker+` .countdown`); !regexp.MustCompile(`^half-open in [45]m [0-5][0-9]s$`).MatchString(got) {
		t.Errorf("countdown %q, want half-open in about 5m", got)
	}

	// Close it from the page: the first try has no token and is refused.
	closeBtn := chromedp.CSS(`button[aria-label="Force breaker flaky-api closed"]`)
	confirmBtn := chromedp.CSS(`button[aria-label="Confirm: Force breaker flaky-api closed"]`)
	step("close without a token", 5*time.Second,
		chromedp.Click(closeBtn),
		chromedp.WaitVisible(confirmBtn),
		chromedp.Click(confirmBtn),
		chromedp.WaitVisible(chromedp.CSS(`#notice[data-kind="error"]`)),
	)
	if got := text(t, ctx, `#notice`); !strings.Contains(got, "token was refused") {
		t.Errorf("notice after a POST without a token: %q", got)
	}
	if st := breakerState(t, adminURL, "flaky-api"); st != "open" {
		t.Fatalf("GET /breakers says %q after a refused close, want open", st)
	}
	step("close with the token", 5*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#token`), token),
		chromedp.Click(closeBtn),
		chromedp.WaitVisible(confirmBtn),
		chromedp.Click(confirmBtn),
		chromedp.WaitVisible(chromedp.CSS(breaker+`[data-state="closed"] .badge.state`)),
	)
	if got := text(t, ctx, breaker+` .badge.state`); got != "CLOSED" {
		t.Errorf("breaker label after closing: %q, want CLOSED", got)
	}
	if st := breakerState(t, adminURL, "flaky-api"); st != "closed" {
		t.Errorf("GET /breakers says %q after closing from the page, want closed", st)
	}

	// The cache block reads /routes and /metrics: one entry, 3 hits of 4.
	steadyRoute := `[data-route="steady-api"]`
	if got := text(t, ctx, steadyRoute+` [data-field="lookups"]`); got != "75% / 25% / 0% of 4" {
		t.Errorf("steady-api hit / miss / stale %q, want 75%% / 25%% / 0%% of 4", got)
	}
	if got := text(t, ctx, steadyRoute+` [data-field="entries"]`); got != "1" {
		t.Errorf("steady-api cache entries %q, want 1", got)
	}
	purgeBtn := chromedp.CSS(`button[aria-label="Purge the cache of route steady-api"]`)
	step("purge a route's cache", 5*time.Second,
		chromedp.Click(purgeBtn),
		chromedp.Click(chromedp.CSS(`button[aria-label="Confirm: Purge the cache of route steady-api"]`)),
		waitJS(`document.querySelector('`+steadyRoute+` [data-field="entries"]').textContent === "0"`),
	)
	if got := text(t, ctx, `#notice`); got != "Cache purged: steady-api." {
		t.Errorf("notice after the purge: %q", got)
	}
	// Degraded mode from the upstream card: two clicks each way.
	steadyCard := `[data-upstream="steady"]`
	step("put an upstream in cache_only mode", 5*time.Second,
		chromedp.Click(chromedp.CSS(`button[aria-label="Serve upstream steady from cache only"]`)),
		chromedp.Click(chromedp.CSS(`button[aria-label="Confirm: Serve upstream steady from cache only"]`)),
		chromedp.WaitVisible(chromedp.CSS(steadyCard+` .mode[data-mode="cache_only"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events li[data-type="upstream_mode"]`)),
	)
	if got := text(t, ctx, `#notice`); got != "Upstream steady is in cache_only mode." {
		t.Errorf("notice after cache_only: %q", got)
	}
	step("end cache_only mode", 5*time.Second,
		chromedp.Click(chromedp.CSS(`button[aria-label="Send upstream steady traffic again"]`)),
		chromedp.Click(chromedp.CSS(`button[aria-label="Confirm: Send upstream steady traffic again"]`)),
		chromedp.WaitVisible(chromedp.CSS(steadyCard+` .mode[data-mode="normal"]`)),
	)
	step("see the health check", 10*time.Second,
		waitJS(`(document.querySelector('`+steadyCard+` .check') || {}).textContent?.includes('HEALTHY')`),
	)
	step("reload the config", 5*time.Second,
		chromedp.Click(chromedp.CSS(`button[aria-label="Reload the config file"]`)),
		chromedp.Click(chromedp.CSS(`button[aria-label="Confirm: Reload the config file"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#events li[data-type="reload"]`)),
		waitJS(`document.getElementById('last-reload').textContent.includes('(admin)')`),
	)

	// The token is kept for the session, not beyond.
	if got := evaluate[string](t, ctx, `sessionStorage.getItem('breakwater.admin.token')`); got != token {
		t.Errorf("sessionStorage token %q, want the one typed", got)
	}

	png := screenshot(t, ctx, filepath.Join(dir, "dashboard-laptop.png"))
	if p := os.Getenv(screenshotEnv); p != "" {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Error(err)
		}
	}

	// A phone: nothing wider than the screen, state still in words.
	step("phone viewport", 5*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.WaitVisible(chromedp.CSS(breaker+` .badge.state`)),
	)
	if w := evaluate[[]int](t, ctx, `[document.documentElement.scrollWidth, window.innerWidth]`); len(w) != 2 || w[0] > w[1] {
		t.Errorf("on a phone the page is %v px wide for a %v px screen", w[0], w[1])
	}
	png = screenshot(t, ctx, filepath.Join(dir, "dashboard-phone.png"))
	if p := os.Getenv(screenshotEnv); p != "" {
		if err := os.WriteFile(strings.TrimSuffix(p, ".png")+"-phone.png", png, 0o644); err != nil {
			t.Error(err)
		}
	}

	for _, m := range messages() {
		t.Errorf("browser console: %s", m)
	}
	seen := len(messages())

	// A restart: the stream drops, the page says so, reconnects by itself
	// and re-reads the state — the new process's breaker is closed again.
	force := func(state string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, adminURL+"/breakers/flaky-api?state="+state, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("force %s: %s", state, resp.Status)
		}
	}
	force("open")
	step("see a breaker forced open elsewhere", 3*time.Second,
		chromedp.WaitVisible(chromedp.CSS(breaker+`[data-state="open"] .badge.state`)))
	bw.stop()
	step("see the stream drop", 5*time.Second, chromedp.WaitVisible(chromedp.CSS(`#conn[data-conn="reconnecting"]`)))
	fixed := strings.NewReplacer("127.0.0.1:0", strings.TrimPrefix(data, "http://"),
		"localhost:0", strings.TrimPrefix(adminURL, "http://")).Replace(cfg)
	if err := os.WriteFile(file, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	startBreakwater(t, bin, file, "BW_DASH_TOKEN="+token)
	step("reconnect and re-read the state", 15*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-conn="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(breaker+`[data-state="closed"] .badge.state`)),
		waitJS(`document.getElementById('last-reload').textContent.includes('(start)')`),
	)
	// While it was down, fetches failed (and the console said so); only
	// script errors and CSP violations count now.
	for _, m := range messages()[seen:] {
		if strings.HasPrefix(m, "exception") || strings.Contains(m, "Content Security Policy") {
			t.Errorf("browser console: %s", m)
		}
	}
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}

// findChromium skips a short run and one with BREAKWATER_SKIP_BROWSER=1,
// and returns the browser's path; without one the test fails, saying how
// to get it.
func findChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and starts a browser")
	}
	if os.Getenv(skipBrowserEnv) == "1" {
		t.Skip(skipBrowserEnv + "=1")
	}
	chromium := chromiumPath
	if _, err := os.Stat(chromium); err != nil {
		if chromium, err = exec.LookPath("chromium"); err != nil {
			t.Fatalf("chromium not found (%s, PATH): run `make browser-deps` to install it, or set %s=1 to skip this test", chromiumPath, skipBrowserEnv)
		}
	}
	return chromium
}

// breakwater is a running binary.
type breakwater struct {
	data, admin string // base URLs
	stop        func() // kill it (and wait); also done at the test's end
}

// startBreakwater runs the binary with file and returns its data and
// admin base URLs, read from its "breakwater started" log line (so :0
// ports work).
func startBreakwater(t *testing.T, bin, file string, env ...string) breakwater {
	t.Helper()
	cmd := exec.Command(bin, "-config", file)
	cmd.Env = append(os.Environ(), env...)
	p := testkit.Start(t, cmd)
	data, admin := p.WaitStarted(t, 15*time.Second)
	return breakwater{data: "http://" + data, admin: "http://" + admin, stop: p.Kill}
}

// startBrowser starts headless Chromium with a fresh profile and no
// network beyond what the page asks for. messages returns what the page
// wrote to the console as errors: CSP violations, exceptions.
func startBrowser(t *testing.T, chromium, dir string) (ctx context.Context, messages func() []string) {
	t.Helper()
	profile := filepath.Join(dir, "chromium-profile")
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(profile),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("password-store", "basic"),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Do starts the browser; it lives as long as ctx, so that
	// call has no timeout of its own (a hung start fails the test's
	// own -timeout).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var errs []string
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				errs = append(errs, m.String())
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		// The refused POST is expected: Chromium logs every 4xx fetch.
		var out []string
		for _, e := range errs {
			if !strings.Contains(e, "401 (Unauthorized)") {
				out = append(out, e)
			}
		}
		return out
	}
}

// waitJS waits until expr is true in the page.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))
}

func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ectx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text is the text of the element sel selects, read in one evaluation
// (a DOM query and a read in two protocol calls could straddle an update).
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	s := evaluate[*string](t, ctx, `(document.querySelector(`+string(q)+`) || {}).textContent`)
	if s == nil {
		t.Fatalf("no element %s\n%s", sel, pageText(ctx))
	}
	return strings.TrimSpace(*s)
}

// pageText is the visible text of the page, for failure messages.
func pageText(ctx context.Context) string {
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
	return "page text:\n" + s
}

// screenshot saves a full-page PNG to path and checks it is one.
func screenshot(t *testing.T, ctx context.Context, path string) []byte {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return png
}

// breakerState asks the admin API, not the page.
func breakerState(t *testing.T, admin, name string) string {
	t.Helper()
	state, ok := testkit.BreakerState(t, admin, name)
	if !ok {
		t.Fatalf("no breaker %q in GET /breakers", name)
	}
	return state
}

// secondWaveConfig has a tier for each kind of card (windows, none, a
// cap), a route bulkhead, an upstream's concurrency and an upstream quota
// that callers queue for, and a route in front of a JSON-RPC server.
// Waits and timeouts are long: the test ends them, not the clock.
const secondWaveConfig = `version: 1
listen: 127.0.0.1:0
admin:
  listen: localhost:0
clients: { keys_file: "%KEYS%" }
tiers:
  free: { rate_limits: [2/4s, 3/1h], max_concurrent: 3, priority: low }
  internal: {}
  paid: { rate_limits: [600/1m], max_concurrent: 20, priority: high }
upstreams:
  app:
    url: %HELD%
    response_header_timeout: 10m
  crm:
    url: %HELD%
    response_header_timeout: 10m
    concurrency: { max_concurrent: 1, max_queue: 10, max_wait: 10m }
  metered:
    url: %HELD%
    quota: { rate: 1/10m, burst: 1, max_wait: 1h }
  tools:
    url: %RPC%
defaults:
  timeout: 1h
routes:
  - name: tiered
    match: { path_prefix: /t/ }
    upstream: app
    client_auth: required
    rate_limit: { key: client }
  - name: narrow
    match: { path_prefix: /n/ }
    upstream: app
    bulkhead: { max_concurrent: 1, max_queue: 10, max_wait: 10m }
  - name: crm-batch
    match: { path_prefix: /c/ }
    upstream: crm
  - name: metered
    match: { path_prefix: /q/ }
    upstream: metered
  - name: mcp
    match: { path: /mcp }
    upstream: tools
    retry: { tools: annotated }
`

// tierView is a tier card as the page shows it.
type tierView struct {
	Name string            `json:"name"`
	Sub  string            `json:"sub"`
	KV   map[string]string `json:"kv"`
}

// waitView is what the page shows of the queues.
type waitView struct {
	Narrow      string            `json:"narrow"`       // route narrow's bulkhead line
	NarrowMeter string            `json:"narrow_meter"` // ... and its meter's label
	CRM         string            `json:"crm"`          // upstream crm's concurrency line
	CRMMeter    string            `json:"crm_meter"`
	Quota       map[string]string `json:"quota"` // upstream metered's quota block
	Paid        map[string]string `json:"paid"`  // tier paid's card
}

// In the page: a dl's dt → dd text, and the views above.
const (
	pageKV    = `const kv = (s) => Object.fromEntries([...document.querySelectorAll(s + ' dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]));`
	tiersJS   = `(() => { ` + pageKV + ` return [...document.querySelectorAll('#tiers [data-tier]')].map((c) => ({name: c.querySelector('h3').textContent, sub: c.querySelector('p.sub').textContent, kv: kv('[data-tier="' + c.dataset.tier + '"] dl')})); })()`
	toolsJS   = `[...document.querySelectorAll('[data-route="mcp"] [data-field="tools"] dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])`
	waitingJS = `(() => { ` + pageKV + `
  const txt = (s) => (document.querySelector(s) || {}).textContent;
  const label = (s) => (document.querySelector(s) || { getAttribute: () => null }).getAttribute('aria-label');
  return { narrow: txt('[data-route="narrow"] p.sub.num'), narrow_meter: label('[data-route="narrow"] meter'),
    crm: txt('[data-upstream="crm"] .concurrency p'), crm_meter: label('[data-upstream="crm"] .concurrency meter'),
    quota: kv('[data-upstream="metered"] .quota dl'), paid: kv('[data-tier="paid"] dl') }; })()`
)

// TestDashboardTiersQueuesToolsInBrowser drives the dashboard's second
// wave with real traffic through the built binary, and checks the figures
// the page shows against what the proxy answered: the client tier cards
// (the refusals each window made, clients, in flight), the waiting
// figures (callers queued at a route bulkhead, at an upstream's
// concurrency slots and for its quota tokens, and that they go when the
// queue drains) and a route's MCP tools (calls, busiest first, and the
// 5xx share of the last interval).
func TestDashboardTiersQueuesToolsInBrowser(t *testing.T) {
	chromium := findChromium(t)
	start := time.Now()
	dir := t.TempDir()

	// One server for app, crm and metered: a path ending in /hold is
	// answered only once release is closed (or its caller has left), any
	// other at once.
	held := make(chan string, 16)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	heldUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hold") {
			held <- r.URL.Path
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer heldUp.Close()
	defer releaseHeld() // before Close, which waits for the handlers

	// A JSON-RPC server: a tools/call with arguments {"fail": true}
	// crashes with a 500.
	rpcUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				Arguments struct {
					Fail bool `json:"fail"`
				} `json:"arguments"`
			} `json:"params"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.ID) == 0 {
			http.Error(w, "not a JSON-RPC request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if req.Method == "tools/list" {
			// Tool labels come from the config and from the tools/list
			// answers breakwater asked for (SPEC Part 3), never from calls.
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"flaky_tool"},{"name":"search_posts"},{"name":"get_post"}]}}`, req.ID)
			return
		}
		if req.Method == "tools/call" && req.Params.Arguments.Fail {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32603,"message":"tool crashed"}}`, req.ID)
			return
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"done"}]}}`, req.ID)
	}))
	defer rpcUp.Close()

	// The keys file holds hashes only: two free clients and a paid one.
	keys := map[string]string{
		"alice": "k-alice-0123456789abcdefghijklmnopqrstuvwxyz",
		"bob":   "k-bob-0123456789abcdefghijklmnopqrstuvwxyz",
		"acme":  "k-acme-0123456789abcdefghijklmnopqrstuvwxyz",
	}
	var list strings.Builder
	list.WriteString("clients:\n")
	for _, c := range [][2]string{{"alice", "free"}, {"bob", "free"}, {"acme", "paid"}} {
		sum := sha256.Sum256([]byte(keys[c[0]]))
		fmt.Fprintf(&list, "  - { id: %s, tier: %s, key_sha256: %q }\n", c[0], c[1], hex.EncodeToString(sum[:]))
	}
	keysFile := filepath.Join(dir, "clients.yaml")
	if err := os.WriteFile(keysFile, []byte(list.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	bin, err := testkit.BuildBinary(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("%KEYS%", keysFile, "%HELD%", heldUp.URL, "%RPC%", rpcUp.URL).Replace(secondWaveConfig)
	file := filepath.Join(dir, "breakwater.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bw := startBreakwater(t, bin, file)
	data, adminURL := bw.data, bw.admin
	t.Logf("breakwater up after %s", time.Since(start).Round(time.Millisecond))

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path, key string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, data+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	rpcID := 0
	rpc := func(method, tool string, fail bool) {
		t.Helper()
		rpcID++
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q}`, rpcID, method)
		if tool != "" {
			body = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":{"name":%q,"arguments":{"fail":%t}}}`, rpcID, method, tool, fail)
		}
		req, _ := http.NewRequest(http.MethodPost, data+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, wantBody := http.StatusOK, `"done"`
		if method == "tools/list" {
			wantBody = `"tools"`
		}
		if fail {
			want, wantBody = http.StatusInternalServerError, "tool crashed"
		}
		if resp.StatusCode != want || !strings.Contains(string(got), wantBody) {
			t.Fatalf("%s %s: %d %s, want the server's %d", method, tool, resp.StatusCode, got, want)
		}
	}

	// Requests that wait: each reports its status (0: it failed) on its
	// channel; those still waiting when the test ends are cancelled.
	bg, cancelBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancelBG(); wg.Wait() }()
	background := func(path, key string) <-chan int {
		out := make(chan int, 1)
		req, _ := http.NewRequestWithContext(bg, http.MethodGet, data+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			out <- resp.StatusCode
		}()
		return out
	}
	awaitHeld := func(path string) {
		t.Helper()
		select {
		case p := <-held:
			if p != path {
				t.Fatalf("the upstream holds %s, want %s", p, path)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not reach the upstream within 15s", path)
		}
	}

	// MCP traffic before the page opens: a tools/list (no tool; it teaches
	// the labels), then flaky_tool 4 calls (1 crashes), search_posts 3,
	// get_post 1.
	rpc("tools/list", "", false)
	for range 3 {
		rpc("tools/call", "search_posts", false)
	}
	rpc("tools/call", "flaky_tool", true)
	for range 3 {
		rpc("tools/call", "flaky_tool", false)
	}
	rpc("tools/call", "get_post", false)

	// Tier traffic: bob once; alice until the 1h window (3 a client)
	// has refused her twice. Her first refusals are the 4s window's (2,
	// then one every 2s): while it refuses, she tries again every 250ms.
	// The page must show the refusals each window made, as the
	// RateLimit header of each 429 named it.
	if resp := get("/t/bob", keys["bob"]); resp.StatusCode != http.StatusOK {
		t.Fatalf("bob: %d, want 200", resp.StatusCode)
	}
	var passed, by4s, by1h int
	for i := 0; by1h < 2; i++ {
		if i == 100 {
			t.Fatalf("after 100 requests alice has %d 200s, %d refusals by the 4s window and %d by the 1h one", passed, by4s, by1h)
		}
		resp := get("/t/alice", keys["alice"])
		rl := resp.Header.Get("RateLimit")
		switch {
		case resp.StatusCode == http.StatusOK:
			passed++
		case resp.StatusCode == http.StatusTooManyRequests && strings.HasPrefix(rl, `"free/4s";`):
			by4s++
			time.Sleep(250 * time.Millisecond) // until the 4s window has a token again
		case resp.StatusCode == http.StatusTooManyRequests && strings.HasPrefix(rl, `"free/1h";`):
			by1h++
		default:
			t.Fatalf("alice's request %d: %d, RateLimit %q", i+1, resp.StatusCode, rl)
		}
	}
	if passed != 3 || by4s == 0 {
		t.Fatalf("alice: %d passed, %d refused by the 4s window; want 3 (the 1h window's burst) and at least 1", passed, by4s)
	}
	t.Logf("alice: %d passed, refused %d times by the 4s window, %d by the 1h window", passed, by4s, by1h)

	ctx, messages := startBrowser(t, chromium, dir)
	step := stepper(t, ctx)
	step("open the dashboard", 15*time.Second,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(adminURL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-conn="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#tiers-section [data-tier="free"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-route="mcp"] [data-field="tools"]`)),
	)

	// (3) MCP tools, busiest first. The 5xx share is of the last interval
	// between two samples; the page's first has none before it, so it
	// may say the share since the start until the next.
	toolPatterns := [][2]string{
		{"flaky_tool", `^4 calls(, 25% 5xx now)?$`},
		{"search_posts", `^3 calls(, 0% 5xx now)?$`},
		{"get_post", `^1 call(, 0% 5xx now)?$`},
	}
	eventually(t, ctx, "route mcp's tools: flaky_tool 4 calls, search_posts 3, get_post 1", 10*time.Second, toolsJS,
		func(rows [][]string) bool {
			if len(rows) != len(toolPatterns) {
				return false
			}
			for i, p := range toolPatterns {
				if len(rows[i]) != 2 || rows[i][0] != p[0] || !regexp.MustCompile(p[1]).MatchString(rows[i][1]) {
					return false
				}
			}
			return true
		})

	// (1) Tier cards, by name.
	tiers := []tierView{
		{Name: "free", Sub: "Priority low, 2 clients", KV: map[string]string{
			"Window 2/4s":     fmt.Sprintf("%d refused", by4s),
			"Window 3/1h":     fmt.Sprintf("%d refused", by1h),
			"Rejected (429)":  strconv.Itoa(by4s + by1h),
			"In flight":       "0 / 3",
			"Clients tracked": "2",
		}},
		{Name: "internal", Sub: "Priority normal, 0 clients", KV: map[string]string{
			"Rejected (429)":  "0",
			"In flight":       "0",
			"Clients tracked": "0",
		}},
		{Name: "paid", Sub: "Priority high, 1 client", KV: map[string]string{
			"Window 600/1m":   "0 refused",
			"Rejected (429)":  "0",
			"In flight":       "0 / 20",
			"Clients tracked": "0",
		}},
	}
	eventuallyEqual(t, ctx, "the tier cards", 10*time.Second, tiersJS, tiers)

	// (2) Queues. Route narrow: one request holds its only slot, two
	// wait. Upstream crm: one holds its only concurrency slot, three
	// wait. Upstream metered: one spends the quota's only token, two wait
	// for the next (10 minutes away). And acme, a paid client, holds two
	// requests.
	var drain []<-chan int // what must end with 200 once released
	drain = append(drain, background("/n/hold", ""))
	awaitHeld("/n/hold")
	drain = append(drain, background("/n/w1", ""), background("/n/w2", ""))
	drain = append(drain, background("/c/hold", ""))
	awaitHeld("/c/hold")
	drain = append(drain, background("/c/w1", ""), background("/c/w2", ""), background("/c/w3", ""))
	for range 2 {
		drain = append(drain, background("/t/hold", keys["acme"]))
		awaitHeld("/t/hold")
	}
	if resp := get("/q/first", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the first request to metered: %d, want 200", resp.StatusCode)
	}
	background("/q/w1", "")
	background("/q/w2", "")
	// The proxy's own account first, so that a failure below is the page's.
	testkit.WaitFor(t, 15*time.Second, "/routes: narrow 2 waiting, crm 3 waiting for a slot, metered 2 for a token", func() bool {
		q := routeQueues(t, adminURL)
		return q["route narrow"] == 2 && q["concurrency crm"] == 3 && q["quota metered"] == 2
	})
	waiting := waitView{
		Narrow:      "1 / 1 in flight, 2 waiting",
		NarrowMeter: "Bulkhead of route narrow: 1 of 1 in flight",
		CRM:         "1 / 1 in flight, 3 waiting",
		CRMMeter:    "Concurrency of upstream crm: 1 of 1 in flight, 3 waiting",
		Quota:       map[string]string{"Tokens": "0.0 / 1", "Rate": "1/10m", "Exhausted": "0", "Waiting": "2"},
		Paid:        map[string]string{"Window 600/1m": "0 refused", "Rejected (429)": "0", "In flight": "2 / 20", "Clients tracked": "1"},
	}
	// The page re-reads /routes and /health every 5s.
	eventuallyEqual(t, ctx, "the waiting figures", 15*time.Second, waitingJS, waiting)

	// Released, the bulkhead and concurrency queues drain; the quota's
	// waiters still wait.
	releaseHeld()
	for i, c := range drain {
		select {
		case code := <-c:
			if code != http.StatusOK {
				t.Errorf("queued request %d ended with %d, want 200", i, code)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("queued request %d did not end within 15s of the release", i)
		}
	}
	waiting.Narrow, waiting.NarrowMeter = "0 / 1 in flight", "Bulkhead of route narrow: 0 of 1 in flight"
	waiting.CRM, waiting.CRMMeter = "0 / 1 in flight, 0 waiting", "Concurrency of upstream crm: 0 of 1 in flight, 0 waiting"
	waiting.Paid["In flight"] = "0 / 20"
	eventuallyEqual(t, ctx, "the waiting figures after the release", 15*time.Second, waitingJS, waiting)

	// The 5xx share is the last interval's: one crashing call is 100% of
	// flaky_tool's, and the others called nothing; then one good call of
	// get_post is 0% of its own, flaky_tool's interval now past.
	rpc("tools/call", "flaky_tool", true)
	eventuallyEqual(t, ctx, "route mcp's tools after a crash", 15*time.Second, toolsJS, [][]string{
		{"flaky_tool", "5 calls, 100% 5xx now"}, {"search_posts", "3 calls"}, {"get_post", "1 call"}})
	rpc("tools/call", "get_post", false)
	eventuallyEqual(t, ctx, "route mcp's tools after a good call", 15*time.Second, toolsJS, [][]string{
		{"flaky_tool", "5 calls"}, {"search_posts", "3 calls"}, {"get_post", "2 calls, 0% 5xx now"}})

	if p := os.Getenv(screenshotEnv); p != "" {
		png := screenshot(t, ctx, filepath.Join(dir, "dashboard-second-wave.png"))
		if err := os.WriteFile(strings.TrimSuffix(p, ".png")+"-second-wave.png", png, 0o644); err != nil {
			t.Error(err)
		}
	}
	// On a phone the new cards fit the screen too.
	step("phone viewport", 5*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.WaitVisible(chromedp.CSS(`[data-tier="free"]`)),
	)
	if w := evaluate[[]int](t, ctx, `[document.documentElement.scrollWidth, window.innerWidth]`); len(w) != 2 || w[0] > w[1] {
		t.Errorf("on a phone the page is %v px wide for a %v px screen", w[0], w[1])
	}
	for _, m := range messages() {
		t.Errorf("browser console: %s", m)
	}
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}

// routeQueues reads /routes: "route NAME" → bulkhead_waiting,
// "concurrency NAME" and "quota NAME" → an upstream's waiters.
func routeQueues(t *testing.T, admin string) map[string]int {
	t.Helper()
	resp, err := http.Get(admin + "/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []struct {
			Name    string `json:"name"`
			Waiting int    `json:"bulkhead_waiting"`
		} `json:"routes"`
		Upstreams []struct {
			Name        string `json:"name"`
			Concurrency *struct {
				Waiting int `json:"waiting"`
			} `json:"concurrency"`
			QuotaWaiting int `json:"quota_waiting"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range body.Routes {
		out["route "+r.Name] = r.Waiting
	}
	for _, u := range body.Upstreams {
		if u.Concurrency != nil {
			out["concurrency "+u.Name] = u.Concurrency.Waiting
		}
		out["quota "+u.Name] = u.QuotaWaiting
	}
	return out
}

// eventually evaluates expr in the page until ok accepts its value, for
// up to within (the page re-reads the admin API every 5s), and returns
// it; else the test fails with the last value read.
func eventually[T any](t *testing.T, ctx context.Context, what string, within time.Duration, expr string, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		raw, err := chromedp.Run(ectx, chromedp.Evaluate[[]byte](expr))
		cancel()
		var v T
		if err == nil {
			if err = json.Unmarshal(raw, &v); err == nil && ok(v) {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not shown within %s; the page shows %s (%v)\n%s", what, within, raw, err, pageText(ctx))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventuallyEqual is eventually for one value, want.
func eventuallyEqual[T any](t *testing.T, ctx context.Context, what string, within time.Duration, expr string, want T) {
	t.Helper()
	w, _ := json.Marshal(want)
	eventually(t, ctx, what+" "+string(w), within, expr, func(v T) bool { return reflect.DeepEqual(v, want) })
}

// stepper returns step: run actions in the browser within a time limit, or
// fail the test naming what was being done, with the page's text.
func stepper(t *testing.T, ctx context.Context) func(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	return func(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, pageText(ctx))
		}
	}
}
