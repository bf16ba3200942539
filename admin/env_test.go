package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/admin"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/dashboard"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/proxy"
	"github.com/breakwater-proxy/breakwater/reload"
)

// env is breakwater in-process, wired as main wires it: an upstream, the
// proxy and the admin handler behind real listeners, and a Reloader on a
// config file in a temp directory.
type env struct {
	t       *testing.T
	file    string
	up      *httptest.Server
	data    *httptest.Server
	admin   *httptest.Server
	srv     *proxy.Server
	metrics *observe.Metrics
	hub     *observe.Hub
	rl      *reload.Reloader
	logs    *testkit.SyncBuffer

	// failing makes the upstream answer 503 to every path holding "fail".
	failing atomic.Bool
	// lastAuth is the Authorization header the upstream saw last.
	lastAuth atomic.Value
}

// newEnv starts breakwater on yaml, where {{UP}} is the upstream's URL.
// The upstream answers 200 with X-Seen-Config echoing the X-Config header
// the proxy set, and 503 on paths holding "fail". The admin listener is on
// loopback.
func newEnv(t *testing.T, yaml string) *env {
	t.Helper()
	return newEnvAt(t, yaml, "127.0.0.1:0")
}

// newEnvAt is newEnv with the admin listener bound at adminAddr.
func newEnvAt(t *testing.T, yaml, adminAddr string) *env {
	t.Helper()
	e := &env{t: t, logs: &testkit.SyncBuffer{}}
	e.lastAuth.Store("")
	e.up = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.lastAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("X-Seen-Config", r.Header.Get("X-Config"))
		if strings.Contains(r.URL.Path, "fail") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(e.up.Close)
	e.file = filepath.Join(t.TempDir(), "breakwater.yaml")
	e.write(yaml)
	cfg, warns, err := config.Load(e.file, config.Overrides{})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	e.hub = observe.NewHub()
	e.metrics = observe.NewMetrics("test")
	obs := observe.NewFanout(e.metrics, e.hub)
	e.srv = proxy.New(log, obs)
	e.rl = reload.New(e.file, config.Overrides{}, e.srv, obs, log)
	if err := e.rl.Start(cfg, warns); err != nil {
		t.Fatalf("start: %v", err)
	}
	ln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	e.rl.Check = admin.ReloadCheck(ln.Addr())
	h := admin.New(e.srv, e.metrics.Registry, e.hub, e.rl, ln.Addr())
	h.Ready.Store(true)
	dash := dashboard.Handler(dashboard.Options{Actions: h.ActionsAllowed, TokenRequired: h.TokenRequired})
	h.Mux().Handle("GET /", dash)
	h.Mux().Handle("GET /ui/", dash)
	e.data = httptest.NewServer(e.srv)
	e.admin = &httptest.Server{Listener: ln, Config: &http.Server{Handler: h}}
	e.admin.Start()
	t.Cleanup(func() {
		e.admin.CloseClientConnections() // /events streams
		e.admin.Close()
		e.data.Close()
		_ = e.srv.Close(context.Background()) // health checkers
	})
	return e
}

// write replaces the config file the way an editor does: a temporary file
// renamed over it, so a reload never reads half a file.
func (e *env) write(yaml string) {
	e.t.Helper()
	testkit.ReplaceFile(e.t, e.file, strings.ReplaceAll(yaml, "{{UP}}", e.up.URL))
}

// get sends a data-plane GET and returns the response with its body read.
func (e *env) get(path string) (*http.Response, string) {
	e.t.Helper()
	resp, err := e.data.Client().Get(e.data.URL + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// call sends an admin request; token "" sends none.
func (e *env) call(method, path, token string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.admin.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.admin.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// breaker reads one breaker from GET /breakers.
func (e *env) breaker(name string) policy.BreakerStatus {
	e.t.Helper()
	code, body := e.call("GET", "/breakers", "")
	if code != 200 {
		e.t.Fatalf("/breakers: %d %s", code, body)
	}
	var ans struct {
		Breakers []policy.BreakerStatus `json:"breakers"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		e.t.Fatalf("/breakers: %v: %s", err, body)
	}
	for _, b := range ans.Breakers {
		if b.Name == name {
			return b
		}
	}
	e.t.Fatalf("/breakers has no %q: %s", name, body)
	return policy.BreakerStatus{}
}

// metric is the value of one series in the registry (-1 when absent).
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.metrics.Registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.Metric {
			got := map[string]string{}
			for _, lp := range m.Label {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			return value(m)
		}
	}
	return -1
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

// breakerGauge is the state breakwater_circuit_breaker_state says is 1.
func (e *env) breakerGauge(name string) string {
	e.t.Helper()
	on := ""
	for _, st := range []string{"closed", "open", "half-open"} {
		switch v := e.metric("breakwater_circuit_breaker_state", map[string]string{"breaker": name, "state": st}); v {
		case 1:
			if on != "" {
				e.t.Fatalf("breaker %s: gauge is 1 for %s and %s", name, on, st)
			}
			on = st
		case 0:
		default:
			e.t.Fatalf("breaker %s state %s: gauge %v", name, st, v)
		}
	}
	return on
}

// logged reports whether a log line has exactly this message.
func (e *env) logged(msg string) bool {
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var l struct {
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == msg {
			return true
		}
	}
	return false
}

// sse is one /events subscriber over a real connection.
type sse struct {
	events chan observe.Event
	raw    *testkit.SyncBuffer // everything read, for secret checks
}

// subscribe opens /events and returns once the subscription is live.
func (e *env) subscribe() *sse {
	e.t.Helper()
	resp, err := e.admin.Client().Get(e.admin.URL + "/events")
	if err != nil {
		e.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Fatalf("/events Content-Type %q", ct)
	}
	s := &sse{events: make(chan observe.Event, 1024), raw: &testkit.SyncBuffer{}}
	br := bufio.NewReader(resp.Body)
	// The first comment is written after the hub subscription is made.
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ": breakwater events") {
		e.t.Fatalf("/events first line %q, %v", line, err)
	}
	go func() {
		defer resp.Body.Close()
		var typ string
		for {
			line, err := br.ReadString('\n')
			s.raw.Write([]byte(line))
			if err != nil {
				close(s.events)
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var ev observe.Event
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err == nil {
					if ev.Type != typ {
						ev.Type = "MISMATCH " + typ + "/" + ev.Type
					}
					s.events <- ev
				}
			}
		}
	}()
	return s
}

// next returns the next event that keep accepts, or fails after within.
func (s *sse) next(t *testing.T, within time.Duration, keep func(observe.Event) bool) observe.Event {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("/events stream ended")
			}
			if keep(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no matching event within %s", within)
		}
	}
}
