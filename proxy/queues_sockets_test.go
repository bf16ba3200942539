package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// holdingUpstream answers /hold only once release is closed, and records
// the order in which other paths arrive.
type holdingUpstream struct {
	release chan struct{}
	held    chan struct{} // one value per /hold that arrived
	mu      sync.Mutex
	order   []string
}

func newHoldingUpstream(t *testing.T) (*holdingUpstream, string) {
	h := &holdingUpstream{release: make(chan struct{}), held: make(chan struct{}, 16)}
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hold") {
			h.held <- struct{}{}
			<-h.release
		} else {
			h.mu.Lock()
			h.order = append(h.order, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			h.mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	})
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})
	return h, up.URL
}

func (p *testProxy) waiting(t *testing.T, name, prio string) float64 {
	return testkit.SumMetric(t, p.metrics.Registry, "breakwater_queue_waiting", map[string]string{"scope": "bulkhead", "name": name, "priority": prio})
}

// queueWaits counts the samples of breakwater_queue_wait_seconds for the
// bulkhead queue name.
func (p *testProxy) queueWaits(t *testing.T, name string) uint64 {
	families, err := p.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, f := range families {
		if f.GetName() != "breakwater_queue_wait_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["scope"] == "bulkhead" && labels["name"] == name {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// answer is one request's outcome, for requests sent in the background.
type answer struct {
	label  string
	status int
	kind   string
	body   string
}

func (p *testProxy) send(t *testing.T, req *http.Request, label string, out chan<- answer) {
	go func() {
		resp, err := p.Client().Do(req)
		if err != nil {
			out <- answer{label: label, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		out <- answer{label: label, status: resp.StatusCode, kind: resp.Header.Get("X-Breakwater-Error"), body: string(body)}
	}()
}

// The Bar of issue 15, through the proxy: an upstream's concurrency is one
// set of slots for its routes, and three requests of a low-priority route
// queued before three of a high-priority route are served after them.
func TestUpstreamConcurrencyServesHighPriorityFirst(t *testing.T) {
	h, url := newHoldingUpstream(t)
	p := startProxy(t, `
upstreams:
  crm:
    url: "{{UP}}"
    concurrency: { max_concurrent: 1, max_queue: 10, max_wait: 30s }
routes:
  - name: batch
    match: { path_prefix: /batch/ }
    upstream: crm
    priority: low
  - name: interactive
    match: { path_prefix: /ui/ }
    upstream: crm
    priority: high
`, map[string]string{"UP": url})

	out := make(chan answer, 8)
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/batch/hold", nil), "hold", out)
	<-h.held
	for i, l := range []string{"low1", "low2", "low3"} {
		p.send(t, newRequest(t, http.MethodGet, p.URL+"/batch/"+l, nil), l, out)
		testkit.WaitFor(t, 10*time.Second, l+" to queue", func() bool { return p.waiting(t, "crm", "low") == float64(i+1) })
	}
	for i, l := range []string{"high1", "high2", "high3"} {
		p.send(t, newRequest(t, http.MethodGet, p.URL+"/ui/"+l, nil), l, out)
		testkit.WaitFor(t, 10*time.Second, l+" to queue", func() bool { return p.waiting(t, "crm", "high") == float64(i+1) })
	}
	close(h.release)
	for range 7 {
		if a := <-out; a.status != http.StatusOK {
			t.Fatalf("%s: %d %s %s", a.label, a.status, a.kind, a.body)
		}
	}
	h.mu.Lock()
	got := strings.Join(h.order, ",")
	h.mu.Unlock()
	if want := "high1,high2,high3,low1,low2,low3"; got != want {
		t.Errorf("upstream saw %s, want %s", got, want)
	}
	if n := p.waiting(t, "crm", "low") + p.waiting(t, "crm", "high"); n != 0 {
		t.Errorf("breakwater_queue_waiting = %v after the run, want 0", n)
	}
	if c := p.queueWaits(t, "crm"); c != 6 {
		t.Errorf("breakwater_queue_wait_seconds count = %v, want 6 (one per waiter)", c)
	}
}

const rpcPing = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}`

// A full queue sheds its newest lower-priority waiter for a higher
// arrival and turns away an arrival it cannot place; a waiter whose wait
// runs out is turned away too. Each is bulkhead_full, and says which.
func TestQueueRejectionsSayWhy(t *testing.T) {
	h, url := newHoldingUpstream(t)
	p := startProxy(t, `
upstreams:
  crm:
    url: "{{UP}}"
    concurrency: { max_concurrent: 1, max_queue: 1, max_wait: 30s }
  other: { url: "{{UP}}" }
routes:
  - name: batch
    match: { path_prefix: /batch/ }
    upstream: crm
    priority: low
  - name: ui
    match: { path_prefix: /ui/ }
    upstream: crm
    priority: high
  - name: slow
    match: { path_prefix: /slow/ }
    upstream: other
    bulkhead: { max_concurrent: 1, max_queue: 5, max_wait: 50ms }
`, map[string]string{"UP": url})

	out := make(chan answer, 8)
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/batch/hold", nil), "hold", out)
	<-h.held
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/batch/low", nil), "low", out)
	testkit.WaitFor(t, 10*time.Second, "low to queue", func() bool { return p.waiting(t, "crm", "low") == 1 })

	// The queue (of one) is full: the high arrival takes low's place.
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/ui/high", nil), "high", out)
	a := <-out
	var prob struct{ Detail string }
	_ = json.Unmarshal([]byte(a.body), &prob)
	if a.label != "low" || a.status != http.StatusServiceUnavailable || a.kind != "bulkhead_full" || !strings.Contains(prob.Detail, "higher-priority") {
		t.Fatalf("first answer: %s %d %s %s; want low shed with bulkhead_full", a.label, a.status, a.kind, a.body)
	}
	testkit.WaitFor(t, 10*time.Second, "high to queue", func() bool { return p.waiting(t, "crm", "high") == 1 })

	// Another high one finds nobody lower to shed: turned away at once,
	// told so in its JSON-RPC error.
	req := newRequest(t, http.MethodPost, p.URL+"/ui/rpc", strings.NewReader(rpcPing))
	req.Header.Set("Content-Type", "application/json")
	resp, body := do(t, p.Client(), req)
	var rpc struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &rpc); err != nil || resp.StatusCode != http.StatusServiceUnavailable || rpc.ID != 3 ||
		rpc.Error.Code != -31503 || !strings.Contains(rpc.Error.Message, "queue is full") {
		t.Fatalf("queue full: %d %s (%v); want 503 with a JSON-RPC error saying the queue is full", resp.StatusCode, body, err)
	}

	// A route bulkhead whose wait runs out.
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/slow/hold", nil), "slowhold", out)
	<-h.held
	resp, body = p.get(t, "/slow/late")
	if err := json.Unmarshal(body, &prob); err != nil || resp.StatusCode != http.StatusServiceUnavailable ||
		resp.Header.Get("X-Breakwater-Error") != "bulkhead_full" || !strings.Contains(prob.Detail, "waited its maximum time") {
		t.Fatalf("wait ran out: %d %s; want bulkhead_full saying the wait ran out", resp.StatusCode, body)
	}

	close(h.release)
	for range 3 { // hold, high, slowhold
		if a := <-out; a.status != http.StatusOK {
			t.Errorf("%s: %d %s", a.label, a.status, a.body)
		}
	}
}

// A client's tier raises the route's priority: a paid client (tier
// priority high) on a low-priority route goes ahead of anonymous callers
// that queued before it.
func TestTierPriorityRaisesTheRoutes(t *testing.T) {
	h, url := newHoldingUpstream(t)
	const key = "k-paid-0123456789abcdefghijklmnopqrstuvwxyz"
	sum := sha256.Sum256([]byte(key))
	keysFile := filepath.Join(t.TempDir(), "clients.yaml")
	if err := os.WriteFile(keysFile, []byte("clients:\n  - { id: acme, tier: paid, key_sha256: \""+hex.EncodeToString(sum[:])+"\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, `
clients: { keys_file: "{{KEYS}}" }
tiers:
  paid: { max_concurrent: 10, priority: high }
upstreams:
  crm:
    url: "{{UP}}"
    concurrency: { max_concurrent: 1, max_queue: 10, max_wait: 30s }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: crm
    priority: low
    client_auth: optional
`, map[string]string{"UP": url, "KEYS": keysFile})

	out := make(chan answer, 4)
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/hold", nil), "hold", out)
	<-h.held
	p.send(t, newRequest(t, http.MethodGet, p.URL+"/anon", nil), "anon", out)
	testkit.WaitFor(t, 10*time.Second, "anon to queue", func() bool { return p.waiting(t, "crm", "low") == 1 })
	paid := newRequest(t, http.MethodGet, p.URL+"/paid", nil)
	paid.Header.Set("Authorization", "Bearer "+key)
	p.send(t, paid, "paid", out)
	testkit.WaitFor(t, 10*time.Second, "paid to queue", func() bool { return p.waiting(t, "crm", "high") == 1 })
	close(h.release)
	for range 3 {
		if a := <-out; a.status != http.StatusOK {
			t.Fatalf("%s: %d %s", a.label, a.status, a.body)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := strings.Join(h.order, ","); got != "paid,anon" {
		t.Errorf("upstream saw %s, want paid,anon", got)
	}
}
