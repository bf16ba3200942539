package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	step := func(what string, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, pageText(ctx))
		}
	}
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
	resp, err := http.Get(admin + "/breakers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Breakers []struct{ Name, State string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, b := range body.Breakers {
		if b.Name == name {
			return b.State
		}
	}
	t.Fatalf("no breaker %q in GET /breakers", name)
	return ""
}
