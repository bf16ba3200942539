package policy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/policy"
)

// modalUpstream answers 500 while failing, stalls until the client leaves
// while stalling, and 200 otherwise.
type modalUpstream struct {
	*testkit.Upstream
	mode atomic.Value // "fail" | "stall" | "ok"
}

func newModalUpstream(t *testing.T, mode string) *modalUpstream {
	m := &modalUpstream{}
	m.mode.Store(mode)
	m.Upstream = testkit.NewUpstream(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		switch m.mode.Load().(string) {
		case "fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "stall":
			<-r.Context().Done()
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	return m
}

// halfOpenDue is a rig whose count breaker (failure_threshold 2,
// success_threshold 2, delay 300ms, no retries) two 500s have opened, and
// whose delay has passed: the next request is a probe.
func halfOpenDue(t *testing.T, halfOpenRequests int) (*rig, *modalUpstream) {
	t.Helper()
	u := newModalUpstream(t, "fail")
	rg := newRig(t, parseConfig(t, testkit.OneRoute(u.URL, `
    retry: off
    circuit_breaker: { failure_threshold: 2, success_threshold: 2, half_open_requests: `+strconv.Itoa(halfOpenRequests)+`, delay: 300ms }
`)), u.Upstream)
	for i := 0; i < 2; i++ {
		if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 500 {
			t.Fatalf("request %d: %d %v, want the upstream's 500", i, code, err)
		}
	}
	if s := rg.breaker.State(); s != policy.Open {
		t.Fatalf("breaker %s after 2 failures, want open", s)
	}
	testkit.WaitFor(t, 3*time.Second, "half-open due", func() bool { return rg.breaker.State() == policy.HalfOpenDue })
	return rg, u
}

// probeAndLeave sends a request whose client gives up once the upstream
// holds it (or after 200 ms at most), and returns its error.
func probeAndLeave(t *testing.T, rg *rig, u *modalUpstream) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.URL+"/", nil)
	resp, err := rg.client.Do(req)
	if err == nil {
		resp.Body.Close()
		return errors.New("answered: " + resp.Status)
	}
	testkit.WaitFor(t, 2*time.Second, "the upstream to see the client leave", func() bool { return u.InFlight.Load() == 0 })
	return err
}

// Issue 11, defect 5: a half-open probe whose client gave up is nobody's
// success. It must not close the breaker, and its permit must come back,
// so that the breaker can still be decided by probes that finish.
func TestCancelledProbesNeitherCloseTheBreakerNorUseUpItsPermits(t *testing.T) {
	testkit.CheckLeaks(t)
	rg, u := halfOpenDue(t, 2)
	b := rg.breaker

	// Five probes (more than half_open_requests) whose clients give up:
	// each is let through, because the one before gave its permit back.
	u.mode.Store("stall")
	for i := 0; i < 5; i++ {
		if err := probeAndLeave(t, rg, u); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			t.Fatalf("probe %d: %v, want the client's own cancellation (a refused probe means its permit was lost)", i, err)
		}
	}
	if n := u.Hits.Load(); n != 2+5 {
		t.Errorf("upstream saw %d requests, want 7: every cancelled probe was sent", n)
	}
	st := b.Status()
	if st.State != policy.HalfOpen || st.Successes != 0 || st.Failures != 0 {
		t.Errorf("after cancelled probes: breaker %s with %d successes, %d failures; want half-open with none recorded",
			st.State, st.Successes, st.Failures)
	}

	// The next request is still a probe, sent to the upstream: with two
	// probes and two successes needed, one failure reopens the breaker.
	u.mode.Store("fail")
	if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 500 {
		t.Fatalf("probe: %d %v, want the upstream's 500", code, err)
	}
	if s := b.State(); s != policy.Open {
		t.Errorf("breaker %s after a failed probe, want open", s)
	}
	want := "closed>open open>half-open half-open>open"
	if got := rg.obs.transitionList(); got != want {
		t.Errorf("transitions %q, want %q", got, want)
	}
}

// half_open_requests still caps probes in flight, cancelled ones
// included while they last; success_threshold good probes close.
func TestHalfOpenProbesAreCappedAndSuccessesClose(t *testing.T) {
	testkit.CheckLeaks(t)
	rg, u := halfOpenDue(t, 3)
	b := rg.breaker

	// Three probes stall upstream; a fourth is refused.
	u.mode.Store("stall")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.URL+"/", nil)
			if resp, err := rg.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	testkit.WaitFor(t, 3*time.Second, "3 probes upstream", func() bool { return u.InFlight.Load() == 3 })
	_, _, err := rg.get(t, u.URL+"/")
	if !errors.Is(err, policy.ErrCircuitOpen) {
		t.Errorf("a 4th probe while 3 are out: %v, want ErrCircuitOpen", err)
	}
	cancel()
	wg.Wait()
	testkit.WaitFor(t, 2*time.Second, "the probes to end upstream", func() bool { return u.InFlight.Load() == 0 })
	if s := b.State(); s != policy.HalfOpen {
		t.Fatalf("breaker %s after cancelled probes, want half-open", s)
	}

	// Their permits are back: one good probe is not enough, two close it.
	u.mode.Store("ok")
	if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 200 {
		t.Fatalf("probe: %d %v", code, err)
	}
	if s := b.State(); s != policy.HalfOpen {
		t.Errorf("breaker %s after 1 good probe of success_threshold 2, want half-open", s)
	}
	if code, _, err := rg.get(t, u.URL+"/"); err != nil || code != 200 {
		t.Fatalf("probe: %d %v", code, err)
	}
	if s := b.State(); s != policy.Closed {
		t.Errorf("breaker %s after 2 good probes, want closed", s)
	}
}
