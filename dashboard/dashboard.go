// Package dashboard serves breakwater's live admin page: one HTML file, a
// stylesheet and a script, embedded in the binary. The page reads the
// admin API (/breakers, /health, /config, /routes, /metrics) and follows
// /events; it owns no state of its own on the server.
//
// The page works offline and under a strict Content-Security-Policy: no
// CDN, no framework, no inline script or style. Operator actions (force a
// breaker, purge a cache, reload the config) are POSTs to the admin API,
// which checks the bearer token; the page only decides whether to offer
// them, from Options.Actions.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path"
	"time"
)

// ui holds the page. Its files are served under /ui/, index.html also at /.
//
//go:embed ui
var ui embed.FS

// CSP is the Content-Security-Policy sent with every answer: scripts,
// styles and fetches from the admin listener itself, nothing inline,
// nothing framed, no forms.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Options are the running process's facts the page needs. The zero value
// serves a read-only dashboard that never asks for a token.
type Options struct {
	// Actions reports whether the page may offer operator actions: true
	// when the admin listener is on loopback, or beyond it with
	// admin.allow_remote and an admin.token. It is asked on every
	// /ui/state.json request, so a reload that changes the admin settings
	// shows at the page's next refresh. nil means never: read-only.
	Actions func() bool
	// TokenRequired reports whether admin POSTs need a bearer token
	// (admin.token is set), so that the page asks for one. nil means no.
	TokenRequired func() bool
}

// State is the /ui/state.json answer.
type State struct {
	// Actions is whether the page offers operator actions.
	Actions bool `json:"actions"`
	// TokenRequired is whether the page must send Authorization: Bearer.
	TokenRequired bool `json:"token_required"`
}

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// contentTypes are set explicitly rather than sniffed or taken from the
// system's mime tables, which differ between machines.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

type handler struct {
	opts   Options
	assets map[string]asset // by URL path: "/ui/app.js"
	index  asset
}

// Handler serves the dashboard: GET / and GET /ui/ answer the page, GET
// /ui/NAME its assets, GET /ui/state.json the State; anything else is 404.
// Register it for both "GET /" and "GET /ui/" on the admin mux; the admin
// API's own, more specific, patterns still win.
func Handler(opts Options) http.Handler {
	h := &handler{opts: opts, assets: map[string]asset{}}
	entries, err := ui.ReadDir("ui")
	if err != nil {
		panic("dashboard: embedded ui is missing: " + err.Error()) // a build error, not a runtime one
	}
	for _, e := range entries {
		ct, ok := contentTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		body, err := ui.ReadFile("ui/" + e.Name())
		if err != nil {
			panic("dashboard: " + err.Error())
		}
		sum := sha256.Sum256(body)
		a := asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if e.Name() == "index.html" {
			h.index = a
			continue
		}
		h.assets["/ui/"+e.Name()] = a
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", CSP)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch p := r.URL.Path; p {
	case "/", "/ui/", "/ui/index.html":
		h.serve(w, r, h.index)
	case "/ui/state.json":
		h.state(w)
	default:
		a, ok := h.assets[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h.serve(w, r, a)
	}
}

// serve answers an asset, revalidated on every load (no-cache) so that a
// new binary's page is never mixed with an old script; the ETag makes the
// revalidation a 304.
func (h *handler) serve(w http.ResponseWriter, r *http.Request, a asset) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

func (h *handler) state(w http.ResponseWriter) {
	st := State{
		Actions:       h.opts.Actions != nil && h.opts.Actions(),
		TokenRequired: h.opts.TokenRequired != nil && h.opts.TokenRequired(),
	}
	b, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
