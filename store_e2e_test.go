package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// The fleet test (issue 12): three real breakwater processes share one
// upstream quota of 10/s through one real redis-server, offered 30/s; the
// upstream answers 429 beyond 10/s. Then Redis is killed, brought back,
// stopped (SIGSTOP: a slow store) and continued. BREAKWATER_FLEET_SECONDS
// sets the length of the shared phase (default 4; the long form is
// 10); the fallback phases last half as long, at least 2 s.

const (
	fleetReplicas = 3
	fleetRate     = 10.0 // the quota, and the upstream's own limit, per second
)

// fleetUpstream counts what each replica sends and refuses beyond the
// limit with 429, as a SaaS API does (a token bucket of 10/s, burst 2).
type fleetUpstream struct {
	lim     *rate.Limiter
	phase   atomic.Int32
	mu      sync.Mutex
	sent    map[[2]int]int // (phase, replica) → requests
	times   map[[2]int][]time.Time
	refused map[int]int // phase → 429s
}

func (u *fleetUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	replica, _ := strconv.Atoi(r.Header.Get("X-Replica"))
	ph := int(u.phase.Load())
	ok := u.lim.Allow()
	u.mu.Lock()
	u.sent[[2]int{ph, replica}]++
	u.times[[2]int{ph, replica}] = append(u.times[[2]int{ph, replica}], time.Now())
	if !ok {
		u.refused[ph]++
	}
	u.mu.Unlock()
	if !ok {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// fleetClients is the offered load's outcome per phase: by status and
// breakwater error kind.
type fleetClients struct {
	mu       sync.Mutex
	outcomes map[int]map[string]int
}

func (c *fleetClients) add(phase int, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outcomes[phase] == nil {
		c.outcomes[phase] = map[string]int{}
	}
	c.outcomes[phase][outcome]++
}

// offer sends perSec requests a second to each replica for d, open loop.
func offer(addrs []string, perSec float64, d time.Duration, phase int, out *fleetClients) {
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / perSec))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		for _, a := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := client.Get("http://" + a + "/x")
				if err != nil {
					out.add(phase, "client error")
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				outcome := strconv.Itoa(resp.StatusCode)
				if k := resp.Header.Get("X-Breakwater-Error"); k != "" {
					outcome += " " + k
				}
				out.add(phase, outcome)
			}()
		}
	}
	wg.Wait()
}

func TestFleetSharedQuota(t *testing.T) {
	if testing.Short() {
		t.Skip("the fleet test runs for several seconds")
	}
	secs := 4
	if v, err := strconv.Atoi(os.Getenv("BREAKWATER_FLEET_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	shared := time.Duration(secs) * time.Second
	fallback := max(shared/2, 3*time.Second)

	rds := testkit.StartRedis(t)
	up := &fleetUpstream{lim: rate.NewLimiter(fleetRate, 2), sent: map[[2]int]int{}, times: map[[2]int][]time.Time{}, refused: map[int]int{}}
	upSrv := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) { up.ServeHTTP(w, r) })

	var data, admins []string
	for i := range fleetReplicas {
		dir := t.TempDir()
		writeFile(t, dir, "breakwater.yaml", fmt.Sprintf(`version: 1
listen: %s
admin: { listen: %s }
log: { access_log: false }
store:
  redis: { url: %s, timeout: 250ms }  # a 2-core machine shared by parallel builds
  replicas: %d
  on_error: local
upstreams:
  api:
    url: %s
    headers: { set: { X-Replica: "%d" } }
    quota: { rate: 10/1s, burst: 1, max_wait: 1s, shared: true }
routes:
  - name: api
    match: { path_prefix: / }
    upstream: api
    retry: off
    circuit_breaker: off
`, testkit.FreeAddr(t), testkit.FreeAddr(t), rds.URL, fleetReplicas, upSrv.URL, i))
		l, a := startReplica(t, dir)
		data, admins = append(data, l), append(admins, a)
	}
	clients := &fleetClients{outcomes: map[int]map[string]int{}}
	const perReplica = fleetRate // offered to each replica: 30/s in all

	// Phase 0: shared.
	offer(data, perReplica, shared, 0, clients)
	avg := up.rate(0, -1)
	t.Logf("shared quota, %d replicas offered %.0f/s for %s: upstream %.2f/s on average, %d 429s; clients %v",
		fleetReplicas, perReplica*fleetReplicas, shared, avg, up.refused[0], clients.outcomes[0])
	var p99 []string
	for _, a := range admins {
		p99 = append(p99, fmt.Sprintf("%.2gms", 1000*histQuantile(t, a, `breakwater_store_duration_seconds_bucket{op="quota"`, 0.99)))
	}
	t.Logf("shared phase: breakwater_store_duration_seconds{op=quota} p99 per replica (bucket bound): %s", strings.Join(p99, ", "))
	if avg > fleetRate*1.05 {
		t.Errorf("upstream saw %.2f/s on average, want <= %.1f", avg, fleetRate*1.05)
	}
	if up.refused[0] != 0 {
		t.Errorf("upstream answered %d 429s with the shared quota, want 0", up.refused[0])
	}

	// Phase 1: Redis killed; phase 2: Redis stopped (slow, not refused).
	for _, step := range []struct {
		phase      int
		name       string
		down, back func()
	}{{1, "killed", rds.Kill, rds.Start}, {2, "stopped (SIGSTOP)", rds.Pause, rds.Resume}} {
		up.phase.Store(int32(step.phase))
		step.down()
		offer(data, perReplica, fallback, step.phase, clients)
		for r := range fleetReplicas {
			got := up.rate(step.phase, r)
			limit := fleetRate / fleetReplicas * 1.1
			t.Logf("redis %s: replica %d sent %.2f/s on average (limit %.2f/s)", step.name, r, got, limit)
			if got > limit {
				t.Errorf("redis %s: replica %d sent %.2f/s upstream, want <= %.2f", step.name, r, got, limit)
			}
		}
		// Failed because of the store: anything breakwater answered but
		// 200 or its quota's own refusal. The upstream's 429s are the
		// upstream's answer: without the store the replicas' local buckets
		// are not in step, and an upstream with little burst tolerance
		// may refuse one now and then; they are reported, not hidden.
		for outcome, n := range clients.outcomes[step.phase] {
			if outcome != "200" && outcome != "503 quota_exhausted" && outcome != "429" {
				t.Errorf("redis %s: %d requests answered %q: failed because of the store", step.name, n, outcome)
			}
		}
		t.Logf("redis %s: clients %v, upstream 429s %d", step.name, clients.outcomes[step.phase], up.refused[step.phase])
		for _, a := range admins {
			if h, status := health(t, a); h != "fallback" || status != "degraded" {
				t.Errorf("redis %s: /health store %q, status %q; want fallback, degraded", step.name, h, status)
			}
		}
		back := time.Now()
		step.back()
		// The store is probed every 250ms: 10s is forty probes, a bound
		// that only a replica that never comes back can miss; how long it
		// took is a figure.
		testkit.WaitFor(t, 10*time.Second, "every replica back on the store", func() bool {
			for _, a := range admins {
				if h, _ := health(t, a); h != "ok" {
					return false
				}
			}
			return true
		})
		took := time.Since(back)
		t.Logf("redis %s then back: every replica shared again %s later", step.name, took.Round(10*time.Millisecond))
	}
}

// rate is the average rate the upstream received in a phase, from one
// replica (all with replica -1): the requests after the first over the
// time from the first to the last, so that waiting in the quota past the
// end of the offered load does not dilute it.
func (u *fleetUpstream) rate(phase, replica int) float64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	var ts []time.Time
	for k, v := range u.times {
		if k[0] == phase && (replica < 0 || k[1] == replica) {
			ts = append(ts, v...)
		}
	}
	if len(ts) < 2 {
		return 0
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return float64(len(ts)-1) / ts[len(ts)-1].Sub(ts[0]).Seconds()
}

// health is /health's "store" and "status" fields.
func health(t *testing.T, admin string) (store, status string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/health")
	if err != nil {
		return err.Error(), ""
	}
	defer resp.Body.Close()
	var h struct{ Store, Status string }
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &h)
	return h.Store, h.Status
}

// histQuantile estimates a quantile from a Prometheus histogram's
// cumulative buckets (the upper bound of the bucket that holds it).
func histQuantile(t *testing.T, admin, prefix string, q float64) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type bucket struct{ le, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		le, _ := strconv.ParseFloat(line[i+4:i+4+j], 64)
		n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0
	}
	want := q * bs[len(bs)-1].n
	for _, b := range bs {
		if b.n >= want {
			return b.le
		}
	}
	return bs[len(bs)-1].le
}

// Trust defect 10 (SPEC Part 3 "Client keys"): a tier's limits on a route
// with `rate_limit: { key: client, shared: true }` are one bucket per
// client for every replica. Two replicas share one redis-server; the
// client's tier allows 3 a minute, so 3 requests pass in all, whichever
// replica they reach (before the fix each replica had its own bucket: 6).
func TestSharedTierLimitAcrossReplicas(t *testing.T) {
	rds := testkit.StartRedis(t)
	upSrv := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	keysDir := t.TempDir()
	keysFile := filepath.Join(keysDir, "clients.yaml")
	out, err := exec.Command(binary, "keys", "new", "-id", "alice", "-tier", "free", "-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys new: %v", err)
	}
	key := strings.TrimSpace(string(out))
	var data []string
	for range 2 {
		dir := t.TempDir()
		writeFile(t, dir, "breakwater.yaml", fmt.Sprintf(`version: 1
listen: %s
admin: { listen: %s }
log: { access_log: false }
store:
  redis: { url: %s, timeout: 250ms }
  replicas: 2
clients: { keys_file: %s }
tiers:
  free: { rate_limits: [3/1m] }
upstreams:
  app: { url: %s }
routes:
  - name: mcp
    match: { path_prefix: / }
    upstream: app
    client_auth: required
    rate_limit: { key: client, shared: true }
`, testkit.FreeAddr(t), testkit.FreeAddr(t), rds.URL, keysFile, upSrv.URL))
		l, _ := startReplica(t, dir)
		data = append(data, l)
	}
	admitted, statuses := 0, map[int]int{}
	for i := range 8 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+data[i%2]+"/tools", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusOK {
			admitted++
		}
	}
	t.Logf("8 requests alternating over 2 replicas, tier 3/1m shared: %v", statuses)
	if admitted != 3 || statuses[http.StatusTooManyRequests] != 5 {
		t.Errorf("admitted %d of 8 (statuses %v), want exactly 3 across both replicas and 5 refused with 429", admitted, statuses)
	}
}

// startReplica runs breakwater on dir's breakwater.yaml and returns its
// listen and admin addresses once it has started.
func startReplica(t *testing.T, dir string) (listen, admin string) {
	t.Helper()
	p := startBinary(t, dir, "run", "-config", filepath.Join(dir, "breakwater.yaml"))
	return p.WaitStarted(t, 15*time.Second)
}
