package health

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/transport"
)

// events records what an Observer hears: with a checker set, the checks
// in a row that decided each health change.
type events struct {
	mu    sync.Mutex
	list  []string
	check *Checker
}

func (e *events) UpstreamHealthChanged(upstream, from, to, result string) {
	ev := upstream + " " + from + "→" + to + " " + result
	if e.check != nil {
		// The checker reports before its next check: this is the state
		// the change happened in.
		st := e.check.Status()
		ev += fmt.Sprintf(" after %d failures, %d successes", st.Failures, st.Successes)
	}
	e.add(ev)
}

func (e *events) UpstreamModeChanged(upstream, mode string) { e.add(upstream + " mode " + mode) }

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// newChecker checks up's /status every 20ms through a base transport.
func newChecker(t *testing.T, up string, timeout time.Duration, obs Observer) *Checker {
	t.Helper()
	tc := transport.Config{Scheme: "http"}
	rt, err := transport.NewBase(tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	hc := config.HealthCheck{Path: "/status", Interval: config.Duration(20 * time.Millisecond),
		Timeout: config.Duration(timeout), UnhealthyAfter: 3, HealthyAfter: 2}
	return NewChecker("crm", Settings{Check: hc, URL: up + "/", Transport: tc}, rt, obs)
}

// A checker turns unhealthy after unhealthy_after failures in a row and
// healthy again after healthy_after successes, reports both changes (not
// the first verdict), and asks nothing once closed.
func TestCheckerThresholdsAndClose(t *testing.T) {
	testkit.CheckLeaks(t)
	var failing atomic.Bool
	var probes atomic.Int64
	up := testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			t.Errorf("checked %s, want /status", r.URL.Path)
		}
		probes.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	obs := &events{}
	c := newChecker(t, up.URL, time.Second, obs)
	obs.check = c
	if down, _ := c.Unhealthy(); down || c.Status().Status != Unknown {
		t.Fatalf("before any check: %+v", c.Status())
	}
	c.Start()
	c.Start() // a reload that keeps the checker starts it again: no second loop
	testkit.WaitFor(t, 5*time.Second, "healthy", func() bool { return c.Status().Status == Healthy })

	failing.Store(true)
	testkit.WaitFor(t, 5*time.Second, "unhealthy", func() bool { down, _ := c.Unhealthy(); return down })
	if st := c.Status(); st.Status != Unhealthy || st.Result != "status 503" || st.LastChange.IsZero() {
		t.Errorf("unhealthy: %+v", st)
	}
	if _, ra := c.Unhealthy(); ra < time.Second {
		t.Errorf("retry after %s, want at least 1s", ra)
	}

	failing.Store(false)
	testkit.WaitFor(t, 5*time.Second, "healthy again", func() bool { return c.Status().Status == Healthy })
	want := []string{"crm healthy→unhealthy status 503 after 3 failures, 0 successes", "crm unhealthy→healthy ok after 0 failures, 2 successes"}
	if got := obs.all(); !slices.Equal(got, want) {
		t.Errorf("observed %q, want %q", got, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n := probes.Load()
	time.Sleep(200 * time.Millisecond) // 10 intervals
	if got := probes.Load() - n; got != 0 {
		t.Errorf("%d probes after Close", got)
	}
}

// Close ends a check in progress: a health path that stalls far beyond
// the test does not hold Close, and the cancelled check decides nothing.
func TestCheckerCloseCancelsStalledCheck(t *testing.T) {
	asked := make(chan struct{}, 1)
	up := testkit.NewUpstream(t, func(_ int64, _ http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	c := newChecker(t, up.URL, 30*time.Second, nil)
	c.Start()
	<-asked
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Close took %s with a check stalled for 30s", took)
	}
	if st := c.Status(); st.Status != Unknown || st.Result != "" {
		t.Errorf("a cancelled check decided: %+v", st)
	}
}

// A Checker never started closes at once; a nil one is never unhealthy.
func TestCheckerNeverStarted(t *testing.T) {
	c := newChecker(t, testkit.DeadURL(t), time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close of a checker never started: %v", err)
	}
	var none *Checker
	if down, _ := none.Unhealthy(); down {
		t.Error("a nil Checker is unhealthy")
	}
}

// Mode reports a change, and only a change.
func TestModeReportsChanges(t *testing.T) {
	obs := &events{}
	m := NewMode("crm", obs)
	m.Set(ModeNormal)
	m.Set(ModeCacheOnly)
	m.Set(ModeCacheOnly)
	if !m.CacheOnly() || m.String() != ModeCacheOnly {
		t.Errorf("mode %s, want cache_only", m)
	}
	m.Set(ModeNormal)
	want := []string{"crm mode cache_only", "crm mode normal"}
	if got := obs.all(); !slices.Equal(got, want) {
		t.Errorf("observed %q, want %q", got, want)
	}
	var zero Mode
	zero.Set(ModeCacheOnly) // reported to nobody
	if !zero.CacheOnly() {
		t.Error("the zero Mode did not take cache_only")
	}
}
