package ratelimit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

func quotaConfig(rate config.Rate, burst int, maxWait time.Duration) config.Quota {
	return config.Quota{
		Rate:            rate,
		Burst:           burst,
		MaxWait:         config.Duration(maxWait),
		HonorRetryAfter: true,
		MaxPause:        config.Duration(time.Minute),
	}
}

func asExhausted(t *testing.T, err error) *ExhaustedError {
	t.Helper()
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("err = %v, want *ExhaustedError", err)
	}
	return ex
}

// timersFor waits (in real time, generously) until clock has n() timers
// pending: the callers under test are asleep on it (those just woken
// have taken their tokens or gone back to sleep).
func timersFor(t *testing.T, clock *fakeClock, n func() int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clock.Timers() != n() {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers pending, want %d", clock.Timers(), n())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// 40 tokens at 10/s, burst 1, asked for by 8 callers at once: on the
// clock's time, the last one is granted at 3.9 s, and by any time t no
// more than burst + rate·t have been.
func TestQuotaSpreadsTokensAtTheRate(t *testing.T) {
	const (
		rate    = 10.0 // per second
		burst   = 1
		workers = 8
		each    = 5
	)
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 10, Period: time.Second}, burst, 30*time.Second), clock)

	start := clock.Now()
	var mu sync.Mutex
	var grants []time.Duration
	var finished atomic.Int32
	for range workers {
		go func() {
			defer finished.Add(1)
			for range each {
				if _, err := q.WaitPriority(context.Background(), 0); err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				mu.Lock()
				grants = append(grants, clock.Now().Sub(start))
				mu.Unlock()
			}
		}()
	}
	for step := 0; finished.Load() < workers; step++ {
		if step > 1000 {
			t.Fatal("the quota still had callers after 10 s on its clock")
		}
		timersFor(t, clock, func() int { return workers - int(finished.Load()) })
		clock.Advance(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(grants) != workers*each {
		t.Fatalf("%d tokens granted, want %d", len(grants), workers*each)
	}
	slices.Sort(grants)
	if last := grants[len(grants)-1]; last != 3900*time.Millisecond {
		t.Errorf("40 tokens at 10/s with burst 1: the last at %v, want 3.9s", last)
	}
	for i, at := range grants {
		if limit := burst + rate*at.Seconds(); float64(i+1) > limit+1e-9 {
			t.Fatalf("%d tokens granted by %v, more than burst+rate·t = %.1f", i+1, at, limit)
		}
	}
	if s := q.Snapshot(); s.Waiting != 0 || s.Exhausted != 0 {
		t.Errorf("snapshot after the run: %+v, want nobody waiting and nothing exhausted", s)
	}
}

// A token that cannot come within the wait allowed fails the caller at
// once (on a clock that never moves, a Wait that slept would never
// return), spending nothing.
func TestQuotaFailsAtOnceWhenTheWaitCannotFit(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 100*time.Millisecond), clock)
	if w, err := q.WaitPriority(context.Background(), 0); err != nil || w != 0 {
		t.Fatalf("first Wait = %v, %v; want the burst token at once", w, err)
	}
	// The next token is 1 s away; the caller has 100 ms.
	_, err := q.WaitPriority(context.Background(), 0)
	ex := asExhausted(t, err)
	if ex.Paused || ex.RetryAfter != time.Second {
		t.Errorf("ExhaustedError = %+v, want RetryAfter 1s, not paused", ex)
	}
	if got := q.Snapshot().Exhausted; got != 1 {
		t.Errorf("Exhausted = %d, want 1", got)
	}
	// Nothing was spent: a second probe sees the same next token, not one
	// a second later.
	clock.Advance(10 * time.Millisecond)
	_, err = q.WaitPriority(context.Background(), 0)
	if ex2 := asExhausted(t, err); ex2.RetryAfter != 990*time.Millisecond {
		t.Errorf("second probe RetryAfter %v, want 990ms: the failed Wait spent a token", ex2.RetryAfter)
	}
	// An already finished ctx is reported as such.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.WaitPriority(done, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(cancelled ctx) = %v, want context.Canceled", err)
	}
}

// The route's own deadline bounds the wait like max_wait (real clock:
// a context's deadline is on it).
func TestQuotaDeadlineBoundsTheWait(t *testing.T) {
	q := realQuota(quotaConfig(config.Rate{N: 1, Period: time.Minute}, 1, time.Hour))
	q.WaitPriority(context.Background(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := q.WaitPriority(ctx, 0)
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Wait took %v to fail for a token 1m away with 30s left, want at once", took)
	}
	if ex := asExhausted(t, err); ex.RetryAfter < 50*time.Second {
		t.Errorf("ExhaustedError = %+v, want RetryAfter ≈ 1m", ex)
	}
}

func TestQuotaMaxWaitZeroNeverWaits(t *testing.T) {
	q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: time.Hour}, 2, 0), newFakeClock())
	for i := range 2 {
		if _, err := q.WaitPriority(context.Background(), 0); err != nil {
			t.Fatalf("Wait %d: %v, want the burst token", i, err)
		}
	}
	_, err := q.WaitPriority(context.Background(), 0)
	if ex := asExhausted(t, err); ex.Paused || !near(ex.RetryAfter, time.Hour, time.Millisecond) {
		t.Errorf("ExhaustedError = %+v, want RetryAfter 1h (the next token at 1/h), not paused", ex)
	}
}

func TestQuotaPauseDelaysTheNextToken(t *testing.T) {
	clock := newFakeClock()
	cfg := quotaConfig(config.Rate{N: 100, Period: time.Second}, 10, 500*time.Millisecond)
	hurried := fakeQuota(cfg, clock)
	hurried.Pause(2 * time.Second)
	if got := hurried.Snapshot().PausedFor; got != 2*time.Second {
		t.Errorf("PausedFor = %v, want 2s", got)
	}
	// Too short a wait fails at once, saying the upstream is paused.
	_, err := hurried.WaitPriority(context.Background(), 0)
	ex := asExhausted(t, err)
	if !ex.Paused || ex.RetryAfter != 2*time.Second {
		t.Errorf("ExhaustedError = %+v, want Paused with RetryAfter 2s", ex)
	}
	if !strings.Contains(ex.Error(), "retry in 2s") {
		t.Errorf("Error() = %q, want it to say retry in 2s", ex.Error())
	}

	// A caller with time to spare waits the pause out, and no longer.
	cfg.MaxWait = config.Duration(30 * time.Second)
	q := fakeQuota(cfg, clock)
	q.Pause(2 * time.Second)
	got := make(chan time.Duration, 1)
	go func() {
		waited, err := q.WaitPriority(context.Background(), 0)
		if err != nil {
			t.Errorf("Wait during a 2s pause: %v", err)
		}
		got <- waited
	}()
	timersFor(t, clock, func() int { return 1 })
	clock.Advance(1999 * time.Millisecond)
	select {
	case w := <-got:
		t.Fatalf("granted after %v, inside a 2s pause", w)
	default:
	}
	clock.Advance(time.Millisecond)
	if waited := <-got; waited != 2*time.Second {
		t.Errorf("Wait during a 2s pause waited %v, want 2s", waited)
	}
	if got := q.Snapshot().PausedFor; got != 0 {
		t.Errorf("PausedFor = %v after the pause, want 0", got)
	}
}

func TestQuotaPauseReachesCallersAlreadyWaiting(t *testing.T) {
	type result struct {
		waited time.Duration
		err    error
	}
	// waitThenPause queues one caller who may wait maxWait for a token 1 s
	// away, then pauses the upstream for 3 s while it waits.
	waitThenPause := func(maxWait time.Duration) (*fakeClock, chan result) {
		clock := newFakeClock()
		q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, maxWait), clock)
		q.WaitPriority(context.Background(), 0) // the burst token
		done := make(chan result, 1)
		go func() {
			w, err := q.WaitPriority(context.Background(), 0)
			done <- result{w, err}
		}()
		timersFor(t, clock, func() int { return 1 })
		q.Pause(3 * time.Second)
		return clock, done
	}

	// The hurried caller learns of the pause at once: the clock never moves.
	_, done := waitThenPause(1500 * time.Millisecond)
	if r := <-done; r.err == nil {
		t.Errorf("hurried caller granted after %v, want a Paused ExhaustedError", r.waited)
	} else if ex := asExhausted(t, r.err); !ex.Paused || ex.RetryAfter != 3*time.Second {
		t.Errorf("hurried caller: %+v, want Paused with RetryAfter 3s", ex)
	}

	// The patient one is granted when the pause ends, not at its old slot.
	clock, done := waitThenPause(30 * time.Second)
	timersFor(t, clock, func() int { return 1 })
	clock.Advance(2999 * time.Millisecond)
	timersFor(t, clock, func() int { return 1 })
	select {
	case r := <-done:
		t.Fatalf("patient caller answered %v, %v inside a 3s pause", r.waited, r.err)
	default:
	}
	clock.Advance(time.Millisecond)
	if r := <-done; r.err != nil || r.waited != 3*time.Second {
		t.Errorf("patient caller: %v, %v; want granted after 3s", r.waited, r.err)
	}
}

func TestQuotaPauseIsCappedAndNeverShortened(t *testing.T) {
	clock := newFakeClock()
	cfg := quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, time.Second)
	cfg.MaxPause = config.Duration(3 * time.Second)
	q := fakeQuota(cfg, clock)

	if got := q.Pause(time.Hour); got != 3*time.Second {
		t.Errorf("Pause(1h) with max_pause 3s returned %v, want the capped 3s", got)
	}
	if got := q.Snapshot().PausedFor; got != 3*time.Second {
		t.Errorf("Pause(1h) with max_pause 3s: PausedFor = %v, want 3s", got)
	}
	if got := q.Pause(time.Second); got != 3*time.Second {
		t.Errorf("a shorter Pause returned %v, want the 3s still in force", got)
	}
	if got := q.Snapshot().PausedFor; got != 3*time.Second {
		t.Errorf("a shorter Pause shortened the pause to %v", got)
	}
	clock.Advance(2 * time.Second)
	if got := q.Pause(2 * time.Second); got != 2*time.Second { // ends 1s after the first: extends it
		t.Errorf("an extending Pause returned %v, want 2s", got)
	}
	if got := q.Snapshot().PausedFor; got != 2*time.Second {
		t.Errorf("PausedFor = %v, want 2s", got)
	}
	q.Pause(-time.Second)
	if got := q.Snapshot().PausedFor; got != 2*time.Second {
		t.Errorf("a negative Pause changed the pause to %v", got)
	}

	cfg.HonorRetryAfter = false
	off := fakeQuota(cfg, clock)
	if got := off.Pause(time.Second); got != 0 {
		t.Errorf("honor_retry_after false: Pause returned %v, want 0", got)
	}
	if got := off.Snapshot().PausedFor; got != 0 {
		t.Errorf("honor_retry_after false: PausedFor = %v, want 0", got)
	}
	cfg.HonorRetryAfter, cfg.MaxPause = true, 0
	zero := fakeQuota(cfg, clock)
	if got := zero.Pause(time.Second); got != 0 {
		t.Errorf("max_pause 0: Pause returned %v, want 0", got)
	}
	if got := zero.Snapshot().PausedFor; got != 0 {
		t.Errorf("max_pause 0: PausedFor = %v, want 0", got)
	}
}

func TestQuotaRefund(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: time.Hour}, 2, 0), clock)
	q.WaitPriority(context.Background(), 0)
	q.WaitPriority(context.Background(), 0)
	if _, err := q.WaitPriority(context.Background(), 0); err == nil {
		t.Fatal("third Wait succeeded with a burst of 2 and max_wait 0")
	}
	q.Refund()
	if s := q.Snapshot(); s.Tokens != 1 {
		t.Errorf("Tokens = %v after a Refund, want 1", s.Tokens)
	}
	if _, err := q.WaitPriority(context.Background(), 0); err != nil {
		t.Errorf("Wait after Refund: %v, want the refunded token", err)
	}
	for range 5 {
		q.Refund()
	}
	if s := q.Snapshot(); s.Tokens != 2 || s.Burst != 2 || s.Rate != "1/1h" {
		t.Errorf("snapshot = %+v, want Tokens capped at the burst of 2", s)
	}
}

func TestQuotaCancelGivesTheTokenBack(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 30*time.Second), clock)
	q.WaitPriority(context.Background(), 0)

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := q.WaitPriority(ctx, 0); left <- err }()
	waitingFor(t, q, 1)
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	// Had the cancelled caller kept its token, none would be free at 1s.
	clock.Advance(time.Second)
	if s := q.Snapshot(); s.Tokens != 1 || s.Waiting != 0 {
		t.Errorf("snapshot at 1s after a cancelled Wait: %+v, want the 1 token free and nobody waiting", s)
	}
}

func TestQuotaWithoutRateOnlyPauses(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(config.Quota{HonorRetryAfter: true, MaxPause: config.Duration(time.Minute)}, clock)
	for range 100 {
		if _, err := q.WaitPriority(context.Background(), 0); err != nil {
			t.Fatalf("Wait without a rate: %v", err)
		}
	}
	q.Pause(10 * time.Second)
	_, err := q.WaitPriority(context.Background(), 0)
	if ex := asExhausted(t, err); !ex.Paused || ex.RetryAfter != 10*time.Second {
		t.Errorf("ExhaustedError = %+v, want Paused for 10s (max_wait 0)", ex)
	}
}

func TestExhaustedErrorRoundsUp(t *testing.T) {
	err := &ExhaustedError{RetryAfter: 1100 * time.Millisecond}
	if got, want := err.Error(), "upstream quota exhausted: retry in 2s"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func BenchmarkQuotaWaitNoContention(b *testing.B) {
	q := realQuota(quotaConfig(config.Rate{N: 1_000_000_000, Period: time.Second}, 1_000_000, time.Second))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.WaitPriority(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// A sleeper that wakes late must not let the next ones catch up with the
// schedule: N+1 requests within one period is what an upstream counting a
// sliding window refuses. The lateness is passed down the queue instead.
func TestQuotaLateSleeperHoldsBackTheNextOnes(t *testing.T) {
	clock := newFakeClock()
	q := fakeQuota(quotaConfig(config.Rate{N: 10, Period: time.Second}, 1, time.Minute), clock)
	t0 := clock.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// The sleeper due at t0 wakes 15ms late: it goes at once.
	clock.Advance(15 * time.Millisecond)
	if now, paceAt, _ := q.release(); !paceAt.Equal(now) {
		t.Fatalf("a first late sleeper was held until %v, want at once", paceAt.Sub(t0))
	}
	// The next, due at 100ms, wakes on time: held until 115ms.
	clock.Advance(85 * time.Millisecond)
	if _, paceAt, _ := q.release(); !paceAt.Equal(at(115 * time.Millisecond)) {
		t.Errorf("the next sleeper goes at %v, want 115ms", paceAt.Sub(t0))
	}
	// And the one due at 200ms, until 215ms: the slot at 115ms was claimed.
	clock.Advance(100 * time.Millisecond)
	if _, paceAt, _ := q.release(); !paceAt.Equal(at(215 * time.Millisecond)) {
		t.Errorf("the one after goes at %v, want 215ms", paceAt.Sub(t0))
	}
	// A token free at once, within an interval of that release, waits for it.
	clock.Advance(100 * time.Millisecond) // 300ms: the bucket has a token
	w, err := q.reserve(clock.Now(), time.Minute, 0)
	if err != nil || w == nil || !w.grantAt.Equal(at(315*time.Millisecond)) {
		t.Fatalf("reserve at 300ms: %v, %+v, want the token at 315ms", err, w)
	}
	// The next, due at 400ms, is an interval after that one: slots never
	// fall within an interval of each other.
	w2, err := q.reserve(clock.Now(), time.Minute, 0)
	if err != nil || w2 == nil || !w2.grantAt.Equal(at(415*time.Millisecond)) {
		t.Fatalf("a second reserve at 300ms: %v, %+v, want the token at 415ms", err, w2)
	}
	q.served(w)
	q.served(w2)
	// Once an interval has passed, sleepers go at once again.
	clock.Advance(200 * time.Millisecond)
	if now, paceAt, _ := q.release(); !paceAt.Equal(now) {
		t.Errorf("a sleeper long after the last one was held until %v", paceAt.Sub(t0))
	}
}

// With max_wait 0 on the real clock a free token is still granted: the
// moment between Wait's start and the reservation is no wait.
func TestQuotaNoWaitRealClock(t *testing.T) {
	q := realQuota(config.Quota{Rate: config.Rate{N: 100, Period: time.Second}, Burst: 100})
	for i := range 10 {
		if _, err := q.WaitPriority(context.Background(), 0); err != nil {
			t.Fatalf("Wait %d with max_wait 0 and a full bucket: %v", i, err)
		}
	}
}
