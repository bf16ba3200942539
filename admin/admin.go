// Package admin serves breakwater's admin listener: health, readiness,
// Prometheus metrics, breaker state, the effective config, reloads, cache
// purges and a Server-Sent Events stream. It presents state the proxy
// owns; it never sits on the data path.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// Handler is the admin API.
type Handler struct {
	proxy   *proxy.Server
	metrics *proxy.Metrics
	hub     *proxy.Hub
	// Reload re-reads the config file; it returns the problems of a bad file.
	reload func() error
	// Ready is false until the data listener is bound, and again while draining.
	Ready    atomic.Bool
	lastLoad atomic.Pointer[LoadResult]
	mux      *http.ServeMux
}

// LoadResult is the outcome of the last config load, for /health and the dashboard.
type LoadResult struct {
	OK     bool      `json:"ok"`
	Time   time.Time `json:"time"`
	Hash   string    `json:"config_hash"`
	Errors []string  `json:"errors,omitempty"`
}

// New builds the admin handler. reload may be nil (quick mode has no file).
func New(p *proxy.Server, m *proxy.Metrics, hub *proxy.Hub, reload func() error) *Handler {
	h := &Handler{proxy: p, metrics: m, hub: hub, reload: reload, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /health", h.health)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	h.mux.HandleFunc("GET /breakers", h.breakers)
	h.mux.HandleFunc("POST /breakers/{name}", h.forceBreaker)
	h.mux.HandleFunc("GET /routes", h.routes)
	h.mux.HandleFunc("GET /config", h.config)
	h.mux.HandleFunc("POST /reload", h.doReload)
	h.mux.HandleFunc("POST /cache/purge", h.purge)
	h.mux.HandleFunc("GET /events", h.events)
	return h
}

// Mux lets other admin pages (the dashboard) register on the same listener.
func (h *Handler) Mux() *http.ServeMux { return h.mux }

// RecordLoad notes a load's outcome (start-up, signal, watch or POST).
func (h *Handler) RecordLoad(cfg *config.Config, err error) {
	r := &LoadResult{OK: err == nil, Time: time.Now().UTC()}
	if err != nil {
		r.Errors = problemLines(err)
		if prev := h.lastLoad.Load(); prev != nil {
			r.Hash = prev.Hash
		}
	} else if cfg != nil {
		r.Hash = cfg.Hash
	}
	h.lastLoad.Store(r)
}

func problemLines(err error) []string {
	var ps config.Problems
	if errors.As(err, &ps) {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// ServeHTTP checks the token on every mutating call, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if cfg := h.proxy.Config(); cfg != nil && !cfg.Admin.Token.IsZero() && !validToken(r, cfg.Admin.Token.Reveal()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="breakwater admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a bearer token is required for admin changes"})
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

func validToken(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if !h.Ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// health answers 200 while any upstream can be reached, 503 when every
// upstream is unhealthy.
func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	ups := h.proxy.Health()
	status, unhealthy := "healthy", 0
	for _, u := range ups {
		switch u.Status {
		case "unhealthy":
			unhealthy++
			status = "degraded"
		case "degraded":
			status = "degraded"
		}
	}
	code := http.StatusOK
	if len(ups) > 0 && unhealthy == len(ups) {
		status, code = "unhealthy", http.StatusServiceUnavailable
	}
	body := map[string]any{"status": status, "upstreams": ups}
	if cfg := h.proxy.Config(); cfg != nil {
		body["config_hash"] = cfg.Hash
	}
	if l := h.lastLoad.Load(); l != nil {
		body["last_reload"] = l
	}
	writeJSON(w, code, body)
}

func (h *Handler) breakers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"breakers": h.proxy.Breakers()})
}

func (h *Handler) forceBreaker(w http.ResponseWriter, r *http.Request) {
	name, state := r.PathValue("name"), policy.State(r.URL.Query().Get("state"))
	found, ok := h.proxy.ForceBreaker(name, state)
	switch {
	case !found:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no breaker named %q", name)})
	case !ok:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state must be open, closed or half-open"})
	default:
		for _, b := range h.proxy.Breakers() {
			if b.Name == name {
				writeJSON(w, http.StatusOK, b)
				return
			}
		}
	}
}

func (h *Handler) routes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"routes": h.proxy.Routes()})
}

func (h *Handler) config(w http.ResponseWriter, _ *http.Request) {
	cfg := h.proxy.Config()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(cfg.JSON())
}

func (h *Handler) doReload(w http.ResponseWriter, _ *http.Request) {
	if h.reload == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{"no config file to reload (quick mode)"}})
		return
	}
	if err := h.reload(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": problemLines(err)})
		return
	}
	cfg := h.proxy.Config()
	writeJSON(w, http.StatusOK, map[string]any{"config_hash": cfg.Hash, "summary": config.Summary(cfg)})
}

func (h *Handler) purge(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("route")
	if name != "" && !h.proxy.HasRoute(name) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no route named %q", name)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"purged": h.proxy.PurgeCache(name)})
}

// events streams the hub as Server-Sent Events.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ch, cancel := h.hub.Subscribe(256)
	defer cancel()
	_, _ = fmt.Fprint(w, ": breakwater events\nretry: 1000\n\n")
	_ = rc.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case b := <-ch:
			var ev struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(b, &ev)
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, b); err != nil {
				return
			}
			_ = rc.Flush()
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			_ = rc.Flush()
		}
	}
}
