// Package admin serves breakwater's admin listener: health, readiness,
// Prometheus metrics, breaker state, the effective config, reloads, cache
// purges and a Server-Sent Events stream. It presents state the proxy
// owns; it never sits on the data path. docs/admin.md documents every
// answer.
package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/health"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
	"github.com/breakwater-proxy/breakwater/reload"
)

// Handler is the admin API.
type Handler struct {
	proxy    *proxy.Server
	feed     *observe.Hub
	reloader *reload.Reloader // nil: POST /reload answers 400
	// loopback is whether the admin listener is bound on loopback: the
	// Host and token rules follow the address bound, not the config file.
	loopback bool
	// postOnly matches the paths that take POST only, whatever the method:
	// the dashboard's catch-all GET / would otherwise answer them 404.
	postOnly *http.ServeMux
	// Ready is false until the data listener is bound, and again while draining.
	Ready atomic.Bool
	mux   *http.ServeMux
}

// Timing of the /events stream.
const (
	// eventsBuffer is how many events a subscriber may fall behind before
	// it misses some (then it is told how many, see events).
	eventsBuffer = 256
	// eventsPing keeps idle streams alive through proxies.
	eventsPing = 15 * time.Second
	// eventsWriteTimeout ends a stream whose reader stopped reading.
	eventsWriteTimeout = 10 * time.Second
)

// New builds the admin handler over the proxy p, the metrics registry
// (served on /metrics, which also gets promhttp's own handler-error
// counter) and the events feed. rl reloads the config file: in quick mode
// it is a Reloader without a file, and nil means the same, so POST /reload
// answers 400. bound is the address the admin listener is bound to (its
// net.Listener's Addr); nil means unknown, taken as beyond loopback, so
// that every change needs the token.
func New(p *proxy.Server, metrics *prometheus.Registry, events *observe.Hub, rl *reload.Reloader, bound net.Addr) *Handler {
	h := &Handler{proxy: p, feed: events, reloader: rl, loopback: boundOnLoopback(bound), mux: http.NewServeMux(), postOnly: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /health", h.health)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: metrics}))
	h.mux.HandleFunc("GET /breakers", h.breakers)
	h.mux.HandleFunc("POST /breakers/{name}", h.forceBreaker)
	h.mux.HandleFunc("GET /routes", h.routes)
	h.mux.HandleFunc("GET /config", h.config)
	h.mux.HandleFunc("POST /reload", h.reload)
	h.mux.HandleFunc("POST /cache/purge", h.purge)
	h.mux.HandleFunc("GET /events", h.events)
	h.mux.HandleFunc("POST /upstreams/{name}", h.upstreamMode)
	for _, path := range []string{"/breakers/{name}", "/reload", "/cache/purge", "/upstreams/{name}"} {
		h.postOnly.HandleFunc(path, http.NotFound) // only matched, never served
	}
	return h
}

// Mux lets other admin pages (the dashboard) register on the same listener.
func (h *Handler) Mux() *http.ServeMux { return h.mux }

type errorBody struct {
	Error string `json:"error"`
}

// writeJSON answers v as JSON. Every answer passes through the running
// config's Redact as a last line of defence: no secret value leaves the
// admin listener, whatever field it got into.
func (h *Handler) writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"cannot encode the answer"}` + "\n")
	}
	body := buf.Bytes()
	if cfg := h.proxy.Config(); cfg != nil {
		body = redactStrings(body, cfg.Redact)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// redactStrings applies redact inside the string literals of a JSON text
// only: a short secret made of digits (or "true") must not turn a number
// elsewhere into invalid JSON.
func redactStrings(b []byte, redact func(string) string) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		if b[i] != '"' {
			out = append(out, b[i])
			i++
			continue
		}
		j := i + 1
		for j < len(b) && b[j] != '"' {
			if b[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(b) { // not JSON: redact the rest whole
			return append(out, redact(string(b[i:]))...)
		}
		out = append(out, '"')
		out = append(out, redact(string(b[i+1:j]))...)
		out = append(out, '"')
		i = j + 1
	}
	return out
}

type statusBody struct {
	Status string `json:"status"`
}

func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, http.StatusOK, statusBody{"ok"})
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if !h.Ready.Load() || h.proxy.Config() == nil {
		h.writeJSON(w, http.StatusServiceUnavailable, statusBody{"not ready"})
		return
	}
	h.writeJSON(w, http.StatusOK, statusBody{"ready"})
}

// HealthReport is the /health answer.
type HealthReport struct {
	// Status is healthy, degraded (some breaker open or half-open) or
	// unhealthy (every upstream unhealthy).
	Status     string           `json:"status"`
	ConfigHash string           `json:"config_hash"`
	LastReload *reload.Result   `json:"last_reload,omitempty"`
	Upstreams  []UpstreamHealth `json:"upstreams"`
	// EventsDropped counts /events deliveries missed by slow subscribers.
	EventsDropped uint64 `json:"events_dropped"`
	// Store is "ok" or "fallback" (status then degraded); absent without
	// a store block. StoreError says why it fell back.
	Store      string `json:"store,omitempty"`
	StoreError string `json:"store_error,omitempty"`
}

// health answers 200 while any upstream can be reached, 503 when every
// upstream is unhealthy.
func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	live := h.proxy.Live()
	rep := HealthReport{Status: "healthy", Upstreams: upstreamHealth(live), EventsDropped: h.feed.Dropped()}
	storeHealth(live, &rep)
	unhealthy := 0
	for _, u := range rep.Upstreams {
		switch u.Status {
		case "unhealthy":
			unhealthy++
			rep.Status = "degraded"
		case "degraded":
			rep.Status = "degraded"
		}
	}
	code := http.StatusOK
	if len(rep.Upstreams) > 0 && unhealthy == len(rep.Upstreams) {
		rep.Status, code = "unhealthy", http.StatusServiceUnavailable
	}
	if cfg := h.proxy.Config(); cfg != nil {
		rep.ConfigHash = cfg.Hash
	}
	if h.reloader != nil {
		rep.LastReload = h.reloader.Last()
	}
	h.writeJSON(w, code, rep)
}

type breakersBody struct {
	Breakers []policy.BreakerStatus `json:"breakers"`
}

func (h *Handler) breakers(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, http.StatusOK, breakersBody{breakerStatuses(h.proxy.Live())})
}

func (h *Handler) forceBreaker(w http.ResponseWriter, r *http.Request) {
	name, state := r.PathValue("name"), policy.State(r.URL.Query().Get("state"))
	if state != policy.Open && state != policy.Closed && state != policy.HalfOpen {
		h.writeJSON(w, http.StatusBadRequest, errorBody{"state must be open, closed or half-open"})
		return
	}
	b := findBreaker(h.proxy.Live(), name)
	if b == nil {
		h.writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no breaker named %q", name)})
		return
	}
	b.Force(state)
	h.writeJSON(w, http.StatusOK, b.Status())
}

type routesBody struct {
	Routes    []RouteStatus    `json:"routes"`
	Tiers     []TierStatus     `json:"tiers,omitempty"`
	Upstreams []UpstreamQueues `json:"upstreams,omitempty"`
}

func (h *Handler) routes(w http.ResponseWriter, _ *http.Request) {
	l := h.proxy.Live()
	h.writeJSON(w, http.StatusOK, routesBody{routeStatuses(l), tierStatuses(l), upstreamQueues(l)})
}

// config answers the effective config, secrets redacted, with its hash
// also in X-Config-Hash.
func (h *Handler) config(w http.ResponseWriter, _ *http.Request) {
	cfg := h.proxy.Config()
	if cfg == nil {
		h.writeJSON(w, http.StatusServiceUnavailable, errorBody{"no config loaded"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Config-Hash", cfg.Hash)
	_, _ = w.Write(cfg.JSON())
}

// ReloadAnswer is the POST /reload answer.
type ReloadAnswer struct {
	reload.Result
	// Summary is the new config's listeners, upstreams and routes (success only).
	Summary *config.SummaryInfo `json:"summary,omitempty"`
}

func (h *Handler) reload(w http.ResponseWriter, _ *http.Request) {
	if h.reloader == nil {
		h.writeJSON(w, http.StatusBadRequest, ReloadAnswer{Result: reload.Result{Errors: []string{reload.ErrNoFile.Error()}}})
		return
	}
	res, err := h.reloader.Reload("admin")
	if err != nil {
		h.writeJSON(w, http.StatusBadRequest, ReloadAnswer{Result: *res})
		return
	}
	ans := ReloadAnswer{Result: *res}
	if cfg := h.proxy.Config(); cfg != nil && cfg.Hash == res.Hash {
		s := config.Summary(cfg)
		ans.Summary = &s
	}
	h.writeJSON(w, http.StatusOK, ans)
}

type purgeBody struct {
	Purged []string `json:"purged"`
}

// upstreamBody is the answer of POST /upstreams/{name}.
type upstreamBody struct {
	Upstream string `json:"upstream"`
	Mode     string `json:"mode"`
}

// upstreamMode puts an upstream in cache_only mode (its routes answer from
// fresh or stale cache and fallback only) or back to normal.
func (h *Handler) upstreamMode(w http.ResponseWriter, r *http.Request) {
	name, mode := r.PathValue("name"), r.URL.Query().Get("mode")
	if mode != health.ModeNormal && mode != health.ModeCacheOnly {
		h.writeJSON(w, http.StatusBadRequest, errorBody{"mode must be cache_only or normal"})
		return
	}
	if !h.proxy.SetUpstreamMode(name, mode) {
		h.writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no upstream named %q", name)})
		return
	}
	h.writeJSON(w, http.StatusOK, upstreamBody{name, mode})
}

func (h *Handler) purge(w http.ResponseWriter, r *http.Request) {
	name, live := r.URL.Query().Get("route"), h.proxy.Live()
	if name != "" && !hasRoute(live, name) {
		h.writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no route named %q", name)})
		return
	}
	h.writeJSON(w, http.StatusOK, purgeBody{purgeCache(live, name)})
}

// events streams the hub as Server-Sent Events: "id: N", "event: TYPE",
// "data: {the Event as JSON}". A subscriber that falls more than
// eventsBuffer events behind misses events rather than slowing anyone
// down; the next event it gets is preceded by a "dropped" event with the
// count. A reader that stops reading is cut after eventsWriteTimeout.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	sub := h.feed.Subscribe(eventsBuffer)
	defer sub.Close()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventsWriteTimeout))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The comment tells a reader that its subscription is live.
	if !write(": breakwater events\nretry: 1000\n\n") {
		return
	}
	ping := time.NewTicker(eventsPing)
	defer ping.Stop()
	var reported uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-sub.C:
			if n := sub.Dropped(); n > reported {
				if !write("event: dropped\ndata: {\"type\":\"dropped\",\"data\":{\"missed\":%d,\"total\":%d}}\n\n", n-reported, n) {
					return
				}
				reported = n
			}
			if !write("id: %d\nevent: %s\ndata: %s\n\n", m.ID, m.Type, m.JSON) {
				return
			}
		case <-ping.C:
			if !write(": ping\n\n") {
				return
			}
		}
	}
}
