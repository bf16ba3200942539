package policy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
)

// The behaviour issue 3 ("Resilience policies") asks for, measured on a
// real pipeline over real sockets.

func randomBody(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestFlakyGETsAreRetriedWithinBoundedAttempts(t *testing.T) {
	testkit.CheckLeaks(t)
	// A seeded sequence: hit i fails with 503 when fail[i], 20% of them.
	r := rand.New(rand.NewPCG(2024, 3))
	fail := make([]bool, 4096)
	for i := range fail {
		fail[i] = r.Float64() < 0.2
	}
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if fail[n%int64(len(fail))] {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "flaky")
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	cfg := parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, backoff: { initial: 1ms, max: 2ms, jitter: 0 } }
`))
	rg := newRig(t, cfg, u)

	const requests = 500
	ok := 0
	for i := 0; i < requests; i++ {
		code, body, err := rg.get(t, u.URL+"/x")
		if err != nil {
			t.Fatal(err)
		}
		if code == http.StatusOK && string(body) == "ok" {
			ok++
		}
	}
	attempts := int(u.Hits.Load())
	t.Logf("flaky 20%%: %d/%d succeeded (%.1f%%), %d upstream attempts (%.3f× requests), %d connections opened",
		ok, requests, 100*float64(ok)/requests, attempts, float64(attempts)/requests, u.NewConns.Load())
	if float64(ok) < 0.98*requests {
		t.Errorf("success %d/%d, want ≥ 98%%", ok, requests)
	}
	if float64(attempts) > 1.3*requests {
		t.Errorf("%d attempts for %d requests, want ≤ 1.3×", attempts, requests)
	}
	if got := rg.obs.totalAttempts(); got != attempts {
		t.Errorf("observer counted %d attempts, upstream saw %d", got, attempts)
	}
	// Discarded 503s are drained, so their connections are reused: a
	// sequential client needs one connection, not one per failure.
	if n := u.NewConns.Load(); n > 2 {
		t.Errorf("%d upstream connections for a sequential client: discarded responses are not reused", n)
	}
}

func TestPOSTNotInRetryMethodsIsSentOnce(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, backoff: { initial: 1ms } }
`)), u)
	resp, err := rg.client.Post(u.URL+"/charge", "text/plain", bytes.NewReader([]byte("pay 10€")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want the upstream's 503", resp.StatusCode)
	}
	if n := u.Hits.Load(); n != 1 {
		t.Errorf("a POST not in retry.methods was sent %d times, want exactly 1", n)
	}
}

func TestPOSTInRetryMethodsReplaysTheSameBytes(t *testing.T) {
	testkit.CheckLeaks(t)
	body := randomBody(7, 300<<10)
	want := sum(body)
	var mu sync.Mutex
	var sums []string
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		sums = append(sums, sum(b))
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, methods: [GET, POST], backoff: { initial: 1ms } }
`)), u)
	resp, err := rg.client.Post(u.URL+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200 on the third attempt", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sums) != 3 {
		t.Fatalf("%d attempts, want 3", len(sums))
	}
	for i, s := range sums {
		if s != want {
			t.Errorf("attempt %d sent a body with sha256 %s, want %s", i+1, s, want)
		}
	}
}

func TestRefusedConnectionIsRetriedEvenForAPOST(t *testing.T) {
	testkit.CheckLeaks(t)
	addr := testkit.FreeAddr(t)
	body := randomBody(9, 64<<10)
	got := make(chan string, 4)
	var up *httptest.Server
	var upMu sync.Mutex
	// The upstream comes up ~300 ms after the first attempt was refused.
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("re-listen on %s: %v", addr, err)
			return
		}
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got <- sum(b)
			_, _ = io.WriteString(w, "created")
		}))
		s.Listener.Close()
		s.Listener = l
		s.Start()
		upMu.Lock()
		up = s
		upMu.Unlock()
	}()
	t.Cleanup(func() {
		upMu.Lock()
		defer upMu.Unlock()
		if up != nil {
			up.Close()
		}
	})
	// POST is not in retry.methods, and the body has no GetBody (an
	// io.Reader the client cannot rewind): only a refusal, which proves
	// nothing was sent, allows another attempt.
	rg := newRig(t, parseConfig(t, testkit.OneRoute("http://"+addr, `
    retry: { attempts: 6, backoff: { initial: 100ms, max: 1s, multiplier: 2, jitter: 0 } }
`)))
	start := time.Now()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/orders", io.MultiReader(bytes.NewReader(body)))
	resp, err := rg.client.Do(req)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rg.transport.CloseIdleConnections()
	t.Logf("POST to a refusing port: %d after %v, attempts %v", resp.StatusCode, elapsed.Round(time.Millisecond), rg.obs.attempts)
	if resp.StatusCode != http.StatusOK || string(b) != "created" {
		t.Fatalf("status %d %q, want 200 created", resp.StatusCode, b)
	}
	if elapsed < 300*time.Millisecond {
		t.Errorf("answered after %v, before the upstream came up", elapsed)
	}
	if n := rg.obs.attemptsBy("connect_error"); n < 2 {
		t.Errorf("%d refused attempts, want ≥ 2", n)
	}
	if s := <-got; s != sum(body) {
		t.Errorf("upstream got body %s, want %s", s, sum(body))
	}
	if len(got) != 0 {
		t.Errorf("the POST reached the upstream more than once")
	}
}

func TestRetryAfterIsWaitedFor(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value func() string
	}{
		{"seconds", func() string { return "1" }},
		// An HTTP-date has whole seconds: two seconds ahead is 1–2 s away.
		{"http-date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testkit.CheckLeaks(t)
			var mu sync.Mutex
			var at []time.Time
			u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				at = append(at, time.Now())
				mu.Unlock()
				if n == 1 {
					w.Header().Set("Retry-After", tc.value())
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				_, _ = io.WriteString(w, "ok")
			})
			rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 5s
    retry: { attempts: 2, backoff: { initial: 10ms, max: 10ms } }
`)), u)
			code, _, err := rg.get(t, u.URL+"/")
			if err != nil || code != http.StatusOK {
				t.Fatalf("got %d, %v; want 200", code, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(at) != 2 {
				t.Fatalf("%d attempts, want 2", len(at))
			}
			gap := at[1].Sub(at[0])
			t.Logf("Retry-After %s: next attempt %v later", tc.name, gap.Round(time.Millisecond))
			if gap < time.Second {
				t.Errorf("next attempt %v after a Retry-After of 1 s", gap)
			}
		})
	}
}

func TestRetryAfterBeyondTheRouteTimeoutIsPassedOnAtOnce(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "come back in two minutes")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 5s
    retry: { attempts: 3, retry_after: { honor: true, max: 30s } }
`)), u)
	start := time.Now()
	resp, err := rg.client.Get(u.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	t.Logf("Retry-After 120 s with 5 s left: answered in %v", elapsed)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "120" || string(b) != "come back in two minutes" {
		t.Errorf("got %d Retry-After=%q %q, want the upstream's 503 with Retry-After 120", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	// Waiting for the Retry-After would spend the route's 5 s: half of it
	// tells the two apart on any machine.
	if elapsed > 5*time.Second/2 {
		t.Errorf("took %v, want at once, not the route's 5 s timeout spent waiting", elapsed)
	}
	if n := u.Hits.Load(); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

func TestLastResponseIsReturnedWhenAttemptsRunOut(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Attempt", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintf(w, "attempt %d", n)
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, backoff: { initial: 1ms } }
`)), u)
	resp, err := rg.client.Get(u.URL + "/")
	if err != nil {
		t.Fatalf("got %v, want the upstream's last response", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Attempt") != "3" || string(b) != "attempt 3" {
		t.Errorf("got %d X-Attempt=%q %q, want 502, 3, \"attempt 3\"", resp.StatusCode, resp.Header.Get("X-Attempt"), b)
	}
}

func TestABackoffThatCannotFitPassesTheLastAnswerOn(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "attempt %d", n)
	})
	// Attempts at 0, 50 and 450 ms; the next would wait 3.2 s with about
	// 2.5 s left: the upstream's third 503 is the answer, at once. Waiting
	// out the route's 3 s instead would end in a timeout, not that answer.
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 3s
    retry: { attempts: 5, backoff: { initial: 50ms, multiplier: 8, max: 30s, jitter: 0 } }
`)), u)
	start := time.Now()
	code, body, err := rg.get(t, u.URL+"/")
	elapsed := time.Since(start)
	t.Logf("answered after %v (attempts at 0, 50, 450 ms; route timeout 3 s)", elapsed.Round(time.Millisecond))
	if err != nil || code != http.StatusServiceUnavailable || string(body) != "attempt 3" {
		t.Errorf("got %d %q %v after %v, want the third attempt's 503", code, body, err, elapsed)
	}
	if elapsed > 3*time.Second/2 {
		t.Errorf("answered after %v, want as soon as the next backoff could not fit (~450ms), not near the 3 s timeout", elapsed)
	}
}

func TestRouteTimeoutIsATimeoutNotACancellation(t *testing.T) {
	for _, retry := range []string{"retry: off", "retry: { attempts: 3, on: [timeout, 503] }"} {
		t.Run(retry, func(t *testing.T) {
			testkit.CheckLeaks(t)
			u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			})
			rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 200ms
    `+retry+`
`)), u)
			start := time.Now()
			_, _, err := rg.get(t, u.URL+"/")
			if !errors.Is(err, policy.ErrTimeout) {
				t.Errorf("got %v, want policy.ErrTimeout", err)
			}
			// The upstream never answers: only the 200 ms route timeout
			// ends the call, never early, and well before 5 s.
			if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
				t.Errorf("took %v, want ~200ms", d)
			}
		})
	}
}

func TestBreakerOpensRejectsFastHalfOpensAndCloses(t *testing.T) {
	testkit.CheckLeaks(t)
	var failing atomic.Bool
	failing.Store(true)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: off
    circuit_breaker: { failure_threshold: 3, delay: 300ms, half_open_requests: 2, success_threshold: 2 }
`)), u)
	b := rg.breaker
	for i := 0; i < 3; i++ {
		if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 500 {
			t.Fatalf("request %d: %d %v, want the upstream's 500", i, code, err)
		}
	}
	if s := b.State(); s != policy.Open {
		t.Fatalf("breaker %s after 3 failures, want open", s)
	}

	// While open: rejected at once, nothing sent.
	const rejected = 200
	start := time.Now()
	for i := 0; i < rejected; i++ {
		_, _, err := rg.get(t, u.URL+"/")
		if !errors.Is(err, policy.ErrCircuitOpen) {
			t.Fatalf("got %v, want ErrCircuitOpen", err)
		}
		if ra := policy.RetryAfterOf(err); ra <= 0 || ra > 300*time.Millisecond {
			t.Fatalf("RetryAfter %v, want the remaining delay", ra)
		}
	}
	avg := time.Since(start) / rejected
	t.Logf("open breaker: %d rejections, %v each on average (through http.Client)", rejected, avg)
	// A speed figure belongs in a benchmark (issue 11, defect 13): the
	// pass mark is only that a rejection waits for nothing.
	if avg > 50*time.Millisecond {
		t.Errorf("a rejection takes %v on average: it waited for something", avg)
	}
	if n := u.Hits.Load(); n != 3 {
		t.Errorf("upstream saw %d requests, want 3: an open breaker sends nothing", n)
	}

	// After the delay: lazily half-open; two good probes close it.
	testkit.WaitFor(t, 2*time.Second, "half-open due", func() bool { return b.State() == policy.HalfOpenDue })
	failing.Store(false)
	for i := 0; i < 2; i++ {
		if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 200 {
			t.Fatalf("probe %d: %d %v", i, code, err)
		}
	}
	if s := b.State(); s != policy.Closed {
		t.Errorf("breaker %s after 2 good probes, want closed", s)
	}

	// Open again; a failed probe reopens it.
	failing.Store(true)
	for i := 0; i < 3; i++ {
		_, _, _ = rg.get(t, u.URL+"/")
	}
	testkit.WaitFor(t, 2*time.Second, "half-open due", func() bool { return b.State() == policy.HalfOpenDue })
	if code, _, _ := rg.get(t, u.URL+"/"); code != 500 {
		t.Errorf("probe answered %d, want the upstream's 500", code)
	}
	if s := b.State(); s != policy.Open {
		t.Errorf("breaker %s after a failed probe, want open", s)
	}
	want := "closed>open open>half-open half-open>closed closed>open open>half-open half-open>open"
	if got := rg.obs.transitionList(); got != want {
		t.Errorf("transitions %q, want %q", got, want)
	}
}

func TestBreakerIgnores4xxAndCancelledClients(t *testing.T) {
	testkit.CheckLeaks(t)
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusNotFound)
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: { attempts: 3, on: [connect_error, timeout, 502, 503, 504] }
    circuit_breaker: { failure_threshold: 3, delay: 10s }
`)), u)
	for i := 0; i < 10; i++ {
		if code, _, _ := rg.get(t, u.URL+"/missing"); code != 404 {
			t.Fatalf("got %d, want 404", code)
		}
	}
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for u.InFlight.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.URL+"/slow", nil)
		if _, err := rg.client.Do(req); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
		cancel()
		testkit.WaitFor(t, 2*time.Second, "the upstream to see the cancellation", func() bool { return u.InFlight.Load() == 0 })
	}
	st := rg.breaker.Status()
	if st.State != policy.Closed || st.Failures != 0 {
		t.Errorf("breaker %s with %d failures after 404s and cancellations, want closed with 0", st.State, st.Failures)
	}
	if n := u.Hits.Load(); n != 15 {
		t.Errorf("upstream saw %d requests, want 15: a cancelled request is never retried", n)
	}
}

func TestBulkheadCapsConcurrency(t *testing.T) {
	testkit.CheckLeaks(t)
	release := make(chan struct{})
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "done")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    bulkhead: { max_concurrent: 3, max_wait: 0s }
`)), u)
	type result struct {
		err error
		d   time.Duration
	}
	const n = 20
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			start := time.Now()
			_, _, err := rg.get(t, u.URL+"/")
			results <- result{err, time.Since(start)}
		}()
	}
	var rejected []time.Duration
	for len(rejected) < n-3 {
		select {
		case r := <-results:
			if !errors.Is(r.err, policy.ErrBulkheadFull) {
				t.Fatalf("got %v while the upstream holds 3 requests, want ErrBulkheadFull", r.err)
			}
			rejected = append(rejected, r.d)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d rejections", len(rejected))
		}
	}
	testkit.WaitFor(t, 2*time.Second, "3 requests upstream", func() bool { return u.InFlight.Load() == 3 })
	if in := rg.bulkhead.InFlight(); in != 3 {
		t.Errorf("bulkhead in flight %d, want 3", in)
	}
	close(release)
	for i := 0; i < 3; i++ {
		if r := <-results; r.err != nil {
			t.Errorf("admitted request: %v", r.err)
		}
	}
	sort.Slice(rejected, func(i, j int) bool { return rejected[i] < rejected[j] })
	t.Logf("bulkhead: %d rejected, slowest rejection %v, median %v; upstream max concurrency %d",
		len(rejected), rejected[len(rejected)-1], rejected[len(rejected)/2], u.MaxInFlight.Load())
	if m := u.MaxInFlight.Load(); m > 3 {
		t.Errorf("upstream saw %d concurrent requests, want ≤ 3", m)
	}
	if slowest := rejected[len(rejected)-1]; slowest > 250*time.Millisecond {
		t.Errorf("slowest rejection took %v, want fast", slowest)
	}
	if rg.obs.bhRejected != n-3 {
		t.Errorf("observer counted %d rejections, want %d", rg.obs.bhRejected, n-3)
	}
	if in := rg.bulkhead.InFlight(); in != 0 {
		t.Errorf("bulkhead in flight %d after everything finished", in)
	}
}

func TestBulkheadSlotIsHeldWhileTheBodyStreams(t *testing.T) {
	testkit.CheckLeaks(t)
	release := make(chan struct{})
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "last\n")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    bulkhead: { max_concurrent: 3, max_wait: 0s }
`)), u)
	var bodies []io.ReadCloser
	open := func() (io.ReadCloser, error) {
		resp, err := rg.client.Get(u.URL + "/stream")
		if err != nil {
			return nil, err
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
			t.Fatalf("first chunk %q, %v", buf, err)
		}
		return resp.Body, nil
	}
	for i := 0; i < 3; i++ {
		b, err := open()
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	if in := rg.bulkhead.InFlight(); in != 3 {
		t.Errorf("in flight %d with 3 bodies streaming, want 3", in)
	}
	if _, err := open(); !errors.Is(err, policy.ErrBulkheadFull) {
		t.Errorf("4th request while 3 bodies stream: %v, want ErrBulkheadFull", err)
	}
	// Closing one stream early frees its slot.
	bodies[0].Close()
	testkit.WaitFor(t, time.Second, "a slot to free", func() bool { return rg.bulkhead.InFlight() == 2 })
	b, err := open()
	if err != nil {
		t.Fatalf("request after a slot freed: %v", err)
	}
	bodies[0] = b
	close(release)
	for _, b := range bodies {
		rest, err := io.ReadAll(b)
		if err != nil || string(rest) != "last\n" {
			t.Errorf("rest of stream %q, %v", rest, err)
		}
		b.Close()
	}
	if in := rg.bulkhead.InFlight(); in != 0 {
		t.Errorf("in flight %d after every body closed", in)
	}
}

func TestRetryBudgetCapsRetriesUnderLoad(t *testing.T) {
	testkit.CheckLeaks(t)
	// Each request carries an id, so the upstream knows a retry when it
	// sees one and can count retries in flight.
	var seen sync.Map
	var retries, maxRetries atomic.Int64
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		n, _ := seen.LoadOrStore(r.Header.Get("X-Id"), new(atomic.Int64))
		if n.(*atomic.Int64).Add(1) > 1 {
			in := retries.Add(1)
			defer retries.Add(-1)
			for m := maxRetries.Load(); in > m && !maxRetries.CompareAndSwap(m, in); m = maxRetries.Load() {
			}
		}
		time.Sleep(10 * time.Millisecond)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry:
      attempts: 3
      backoff: { initial: 1ms, max: 1ms, jitter: 0 }
      budget: { ratio: 0.2, min_concurrent: 3 }
    circuit_breaker: off
`)), u)
	const workers, each = 20, 30
	var wg sync.WaitGroup
	var not503 atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				req, _ := http.NewRequest(http.MethodGet, u.URL+"/", nil)
				req.Header.Set("X-Id", fmt.Sprintf("%d-%d", w, i))
				resp, err := rg.client.Do(req)
				if err != nil {
					not503.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					not503.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	requests := workers * each
	attempts := int(u.Hits.Load())
	// The budget's definition: retries in flight ≤ max(min_concurrent,
	// ratio × attempts in flight). Each caller has at most one attempt in
	// flight, so the upstream never sees more than max(3, 0.2 × 20) = 4
	// retries at once (failsafe's own budget let 6 through).
	if m := maxRetries.Load(); m > 4 {
		t.Errorf("upstream saw %d retries at once, want ≤ 4", m)
	}
	// Over the run: attempts ≤ requests / (1 − ratio) = 1.25 × requests
	// while at least min_concurrent / ratio = 15 callers are busy; in the
	// last round, with fewer left, min_concurrent lets each of them retry
	// freely: + (attempts − 1) × workers = 40. Without a budget it would
	// be 3 × requests; failsafe's own budget gave 1.46 ×.
	bound := int(float64(requests)/(1-0.2)) + (3-1)*workers
	t.Logf("budget 0.2: %d requests → %d attempts (%.3f×; bound %d; without a budget %d); at most %d retries at once; %d refusals observed",
		requests, attempts, float64(attempts)/float64(requests), bound, 3*requests, maxRetries.Load(), rg.obs.budget)
	if attempts > bound {
		t.Errorf("%d attempts for %d requests, want ≤ %d", attempts, requests, bound)
	}
	if rg.obs.budget == 0 {
		t.Error("the budget never refused a retry")
	}
	if n := not503.Load(); n != 0 {
		t.Errorf("%d requests did not get the upstream's own 503: a spent budget returns the failure as it came", n)
	}
}

func TestPerTryTimeoutCutsASlowAttemptAndCountsForTheBreaker(t *testing.T) {
	testkit.CheckLeaks(t)
	var cut atomic.Bool
	u := testkit.NewUpstream(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-r.Context().Done():
				cut.Store(true)
			case <-time.After(5 * time.Second):
			}
			return
		}
		_, _ = io.WriteString(w, "fast")
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    timeout: 5s
    retry: { attempts: 3, per_try_timeout: 100ms, on: [timeout, 503], backoff: { initial: 1ms } }
    circuit_breaker: { failure_threshold: 5, delay: 10s }
`)), u)
	start := time.Now()
	code, body, err := rg.get(t, u.URL+"/")
	elapsed := time.Since(start)
	if err != nil || code != 200 || string(body) != "fast" {
		t.Fatalf("got %d %q %v, want 200 from the second attempt", code, body, err)
	}
	t.Logf("per_try_timeout 100ms: answered in %v", elapsed.Round(time.Millisecond))
	// Not cut, the first attempt would take 5 s: half of it tells the two
	// apart on any machine.
	if elapsed < 100*time.Millisecond || elapsed > 5*time.Second/2 {
		t.Errorf("answered in %v, want just over 100ms, not the slow attempt's 5 s", elapsed)
	}
	if rg.obs.attemptsBy("timeout") != 1 || rg.obs.attemptsBy("2xx") != 1 {
		t.Errorf("attempts %v, want one timeout and one 2xx", rg.obs.attempts)
	}
	if f := rg.breaker.Status().Failures; f != 1 {
		t.Errorf("breaker recorded %d failures, want 1 (the cut attempt)", f)
	}
	testkit.WaitFor(t, 2*time.Second, "the slow attempt to be cut upstream", cut.Load)
}

func TestHedgeCutsTheTail(t *testing.T) {
	testkit.CheckLeaks(t)
	const requests = 200
	// 10% of requests, chosen by a seeded sequence, are slow (1 s) on
	// their first arrival; the hedge of a slow one is fast.
	r := rand.New(rand.NewPCG(11, 12))
	slow := map[string]bool{}
	for len(slow) < requests/10 {
		slow[strconv.Itoa(r.IntN(requests))] = true
	}
	var seen sync.Map
	var cutShort atomic.Int64
	u := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Id")
		_, again := seen.LoadOrStore(id, true)
		if !again && strings.HasPrefix(id, "503-") {
			// A quick failure with a body: the hedge is sent anyway and
			// wins; this loser's body must be drained and closed.
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write(make([]byte, 8<<10))
			return
		}
		if !again && slow[id] {
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
				cutShort.Add(1)
				return
			}
		}
		_, _ = io.WriteString(w, "ok "+id)
	})
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    hedge: { delay: 50ms, max: 1 }
    circuit_breaker: { failure_rate: 50%, min_requests: 1000, window: 60s, delay: 10s }
`)), u)
	lat := make([]time.Duration, 0, requests)
	for i := 0; i < requests; i++ {
		req, _ := http.NewRequest(http.MethodGet, u.URL+"/item", nil)
		req.Header.Set("X-Id", strconv.Itoa(i))
		start := time.Now()
		resp, err := rg.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		if string(b) != "ok "+strconv.Itoa(i) {
			t.Fatalf("request %d got %q", i, b)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99, worst := lat[requests/2], lat[requests*99/100-1], lat[requests-1]
	t.Logf("hedge 50ms, 10%% slow 1s: p50 %v, p99 %v, max %v; hedges %v; %d slow attempts cut short",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond), rg.obs.hedges, cutShort.Load())
	// Without the hedge 10% of requests take the slow 1 s, and so does
	// the p99; half of it tells the two apart. Whether any slow attempt
	// was waited for is the cancellation count below, not a time.
	if p99 > time.Second/2 {
		t.Errorf("p99 %v, want near the 50ms hedge delay, not the 1s slow time", p99)
	}
	if n := rg.obs.hedgesBy("sent"); n < len(slow) {
		t.Errorf("%d hedges sent, want ≥ %d", n, len(slow))
	}
	testkit.WaitFor(t, 3*time.Second, "every slow loser to be cancelled", func() bool { return cutShort.Load() == int64(len(slow)) })

	// A hedge's loser is cancelled by us: that is nobody's failure.
	if st := rg.breaker.Status(); st.State != policy.Closed || st.Failures != 0 {
		t.Errorf("breaker %s with %d failures: cancelled hedge losers were counted", st.State, st.Failures)
	}
	if n := rg.obs.attemptsBy("error") + rg.obs.attemptsBy("connect_error"); n != 0 {
		t.Errorf("attempts %v: a cancelled loser is reported as an upstream error", rg.obs.attempts)
	}

	// Losers that did answer: a first attempt's quick 503 (not good enough
	// to stop hedging) loses to its hedge; its body is drained and closed
	// (the rig checks every body was closed) and its connection reused.
	conns := u.NewConns.Load()
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest(http.MethodGet, u.URL+"/item", nil)
		req.Header.Set("X-Id", "503-"+strconv.Itoa(i))
		resp, err := rg.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok 503-"+strconv.Itoa(i) {
			t.Fatalf("got %d %q, want the hedge's 200", resp.StatusCode, b)
		}
		// The loser is drained in the background (drain.Discard).
		testkit.WaitFor(t, time.Second, "the loser's body to be drained and closed", func() bool { return rg.tracker.open.Load() == 0 })
	}
	if n := u.NewConns.Load() - conns; n > 2 {
		t.Errorf("%d new connections for 10 hedged requests whose losers answered: their bodies are not drained", n)
	}
}
