package dashboard_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/breakwater-proxy/breakwater/dashboard"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// newServer serves the dashboard the way main.go registers it: on a mux
// that also has admin-like endpoints, which must keep winning.
func newServer(t *testing.T, opts dashboard.Options) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /breakers", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "admin breakers") })
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "admin reload") })
	h := dashboard.Handler(opts)
	mux.Handle("GET /", h)
	mux.Handle("GET /ui/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestServesThePageAndAssets(t *testing.T) {
	srv := newServer(t, dashboard.Options{})
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js" defer></script>`},
		{"/ui/", "text/html; charset=utf-8", `<link rel="stylesheet" href="/ui/app.css">`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "new EventSource('/events')"},
		{"/ui/app.css", "text/css; charset=utf-8", ".badge"},
		{"/ui/state.json", "application/json", `"actions":false`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := testkit.Get(t, srv.Client(), srv.URL+tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			checkSecurityHeaders(t, resp)
		})
	}
}

func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want nosniff", got)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "connect-src": "'self'",
		"img-src": "'self' data:", "base-uri": "'none'", "form-action": "'none'", "frame-ancestors": "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("CSP %s = %q, want %q (CSP: %s)", name, got, want, csp)
		}
	}
	for _, loose := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(csp, loose) {
			t.Errorf("CSP allows %s: %s", loose, csp)
		}
	}
}

// The CSP forbids inline script and style, so the page must not rely on
// any: no <script> with a body, no <style>, no style= or on*= attributes.
func TestPageHasNothingInline(t *testing.T) {
	srv := newServer(t, dashboard.Options{})
	_, html := testkit.Get(t, srv.Client(), srv.URL+"/")
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`<script[^>]*>[^<]+</script>`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`(src|href)="(https?:)?//`), // nothing from elsewhere: works offline
	} {
		if m := re.FindString(html); m != "" {
			t.Errorf("page has %q, which the CSP or offline use forbids", m)
		}
	}
	_, js := testkit.Get(t, srv.Client(), srv.URL+"/ui/app.js")
	js = strings.ReplaceAll(js, "'http://www.w3.org/2000/svg'", "") // a namespace name, not a fetch
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "http://", "https://", ".style."} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
}

func TestNotFound(t *testing.T) {
	srv := newServer(t, dashboard.Options{})
	for _, p := range []string{"/nope", "/ui/nope.js", "/ui/../admin.go", "/dashboard.go", "/ui/ui/app.js", "/index.html", "/favicon.ico"} {
		resp, _ := testkit.Get(t, srv.Client(), srv.URL+p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
		if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: 404 without the security headers", p)
		}
	}
}

// The admin API's own patterns are more specific than "GET /" and win.
func TestAdminPatternsWin(t *testing.T) {
	srv := newServer(t, dashboard.Options{})
	if _, body := testkit.Get(t, srv.Client(), srv.URL+"/breakers"); body != "admin breakers" {
		t.Errorf("GET /breakers answered %q, want the admin endpoint", body)
	}
	resp, err := srv.Client().Post(srv.URL+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "admin reload" {
		t.Errorf("POST /reload answered %q, want the admin endpoint", b)
	}
}

func TestHeadAndRevalidation(t *testing.T) {
	srv := newServer(t, dashboard.Options{})
	resp, err := srv.Client().Head(srv.URL + "/ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || etag == "" {
		t.Fatalf("HEAD: status %d, ETag %q", resp.StatusCode, etag)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache (revalidate: a new binary brings a new page)", cc)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
}

// The handler refuses methods it does not serve when reached directly
// (on the admin mux, "GET /" never routes a POST to it).
func TestOnlyGET(t *testing.T) {
	rec := httptest.NewRecorder()
	dashboard.Handler(dashboard.Options{}).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", rec.Code)
	}
}

func TestStateReportsActions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts dashboard.Options
		want dashboard.State
	}{
		{"zero options: read-only", dashboard.Options{}, dashboard.State{}},
		{"actions, no token", dashboard.Options{Actions: func() bool { return true }}, dashboard.State{Actions: true}},
		{"actions with token", dashboard.Options{Actions: func() bool { return true }, TokenRequired: func() bool { return true }},
			dashboard.State{Actions: true, TokenRequired: true}},
		{"actions refused", dashboard.Options{Actions: func() bool { return false }, TokenRequired: func() bool { return true }},
			dashboard.State{TokenRequired: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, tc.opts)
			resp, body := testkit.Get(t, srv.Client(), srv.URL+"/ui/state.json")
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			var got dashboard.State
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if got != tc.want {
				t.Errorf("state %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Actions is asked on every request, so a reload that changes the admin
// settings shows without a restart.
func TestStateIsLive(t *testing.T) {
	var allowed atomic.Bool
	srv := newServer(t, dashboard.Options{Actions: allowed.Load})
	if _, body := testkit.Get(t, srv.Client(), srv.URL+"/ui/state.json"); !strings.Contains(body, `"actions":false`) {
		t.Fatalf("state %s, want actions false", body)
	}
	allowed.Store(true)
	if _, body := testkit.Get(t, srv.Client(), srv.URL+"/ui/state.json"); !strings.Contains(body, `"actions":true`) {
		t.Fatalf("state %s, want actions true", body)
	}
}
