package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// flakyAPI is the bundled upstream: a small shop API that misbehaves the
// way real ones do. In order of precedence, for each request:
//
//   - during the outage window (measured from start) every answer is a 503;
//   - above quota requests in one wall-clock second it answers 429 with
//     Retry-After: 1 (a fixed window, counting every request it sees);
//   - during the burn window another client of the same account has used
//     the quota up: every answer is that 429;
//   - failRate of the rest get a plain 503;
//   - slowRate of the rest take slowDelay before answering;
//   - everything else answers in a few milliseconds.
//
// POST /orders deduplicates on Idempotency-Key, as payment APIs do: a
// retried order is answered with the order the first attempt created.
type flakyAPI struct {
	outageFrom, outageTo time.Duration
	burnFrom, burnTo     time.Duration
	quota                int
	failRate, slowRate   float64
	slowDelay            time.Duration

	start time.Time
	srv   *http.Server
	url   string

	received, tooMany, unavailable atomic.Int64

	mu        sync.Mutex
	window    int64 // the wall-clock second being counted
	inWindow  int
	orders    map[string]int // Idempotency-Key → order
	nextOrder int
}

// startFlakyAPI serves api on a fresh loopback port.
func startFlakyAPI(api *flakyAPI) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	api.orders = map[string]int{}
	api.start = time.Now()
	api.url = "http://" + ln.Addr().String()
	api.srv = &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = api.srv.Serve(ln) }()
	return nil
}

// restartClock makes the outage window count from now.
func (a *flakyAPI) restartClock() {
	a.mu.Lock()
	a.start = time.Now()
	a.mu.Unlock()
}

func (a *flakyAPI) close() { _ = a.srv.Close() }

func (a *flakyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.received.Add(1)
	now := time.Now()
	a.mu.Lock()
	since := now.Sub(a.start)
	sec := now.Unix()
	if sec != a.window {
		a.window, a.inWindow = sec, 0
	}
	a.inWindow++
	over := a.inWindow > a.quota || (since >= a.burnFrom && since < a.burnTo)
	a.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	switch {
	case since >= a.outageFrom && since < a.outageTo:
		a.unavailable.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, `{"error":"service unavailable"}`)
		return
	case over:
		a.tooMany.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = fmt.Fprintf(w, `{"error":"quota of %d requests per second exceeded"}`+"\n", a.quota)
		return
	}
	p := rand.Float64()
	switch {
	case p < a.failRate:
		a.unavailable.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintln(w, `{"error":"upstream hiccup"}`)
		return
	case p < a.failRate+a.slowRate:
		pause(r, a.slowDelay)
	default:
		pause(r, time.Duration(2+rand.IntN(8))*time.Millisecond)
	}

	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/items/"):
		id := strings.TrimPrefix(r.URL.Path, "/items/")
		w.Header().Set("Cache-Control", "max-age=1")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "name": "item " + id, "price": 9.99})
	case r.Method == http.MethodGet && r.URL.Path == "/recommendations":
		_ = json.NewEncoder(w).Encode(map[string]any{"items": []string{"3", "5", "8"}, "user": r.URL.Query().Get("user")})
	case r.Method == http.MethodPost && r.URL.Path == "/orders":
		key := r.Header.Get("Idempotency-Key")
		a.mu.Lock()
		id, seen := a.orders[key]
		if !seen || key == "" {
			a.nextOrder++
			id = a.nextOrder
			if key != "" {
				a.orders[key] = id
			}
		}
		a.mu.Unlock()
		w.Header().Set("Location", "/orders/"+strconv.Itoa(id))
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"order": id})
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprintln(w, `{"error":"not found"}`)
	}
}

// pause sleeps for d, or until the client gives up.
func pause(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
