package ratelimit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
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

// TestQuotaSpreadsTokensAtTheRate is the slow one (≈4 s); it runs in
// parallel with the other real-clock tests.
func TestQuotaSpreadsTokensAtTheRate(t *testing.T) {
	t.Parallel()
	const (
		rate    = 10.0 // per second
		burst   = 1
		workers = 8
		each    = 5
	)
	q := realQuota(quotaConfig(config.Rate{N: 10, Period: time.Second}, burst, 30*time.Second))

	start := time.Now()
	var mu sync.Mutex
	var grants []time.Duration
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := q.WaitPriority(context.Background(), 0); err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				mu.Lock()
				grants = append(grants, time.Since(start))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d tokens in %v", len(grants), elapsed)
	if len(grants) != workers*each {
		t.Fatalf("%d tokens granted, want %d", len(grants), workers*each)
	}
	if elapsed < 3300*time.Millisecond || elapsed > 5500*time.Millisecond {
		t.Errorf("40 tokens at 10/s with burst 1 took %v, want ≈ 3.9 s (3.3–5.5 s)", elapsed)
	}
	// By any time t no more than burst + rate·t may have been granted
	// (one token of slack for float rounding at the boundary).
	slices.Sort(grants)
	for i, at := range grants {
		if limit := burst + rate*at.Seconds() + 1; float64(i+1) > limit {
			t.Fatalf("%d tokens granted by %v, more than burst+rate·t = %.1f", i+1, at, limit)
		}
	}
	if s := q.Snapshot(); s.Waiting != 0 || s.Exhausted != 0 {
		t.Errorf("snapshot after the run: %+v, want nobody waiting and nothing exhausted", s)
	}
}

func TestQuotaFailsAtOnceWhenTheWaitCannotFit(t *testing.T) {
	t.Parallel()
	q := realQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 30*time.Second))
	if w, err := q.WaitPriority(context.Background(), 0); err != nil || w > 50*time.Millisecond {
		t.Fatalf("first Wait = %v, %v; want the burst token at once", w, err)
	}

	// The next token is 1 s away; the caller has 100 ms.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := q.WaitPriority(ctx, 0)
	if took := time.Since(begin); took > 50*time.Millisecond {
		t.Errorf("Wait took %v to fail, want at once (< 50ms)", took)
	}
	ex := asExhausted(t, err)
	if ex.Paused || ex.RetryAfter < 800*time.Millisecond || ex.RetryAfter > time.Second {
		t.Errorf("ExhaustedError = %+v, want RetryAfter ≈ 1s, not paused", ex)
	}
	if got := q.Snapshot().Exhausted; got != 1 {
		t.Errorf("Exhausted = %d, want 1", got)
	}

	// Nothing was spent: a second probe sees the same next token, not one
	// a second later.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	_, err = q.WaitPriority(ctx2, 0)
	if ex2 := asExhausted(t, err); ex2.RetryAfter > ex.RetryAfter {
		t.Errorf("second probe RetryAfter %v > first %v: the failed Wait spent a token", ex2.RetryAfter, ex.RetryAfter)
	}

	// max_wait shorter than the wait fails at once just the same.
	short := realQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 100*time.Millisecond))
	short.WaitPriority(context.Background(), 0)
	begin = time.Now()
	_, err = short.WaitPriority(context.Background(), 0)
	if took := time.Since(begin); took > 50*time.Millisecond {
		t.Errorf("max_wait 100ms: Wait took %v to fail, want at once", took)
	}
	asExhausted(t, err)

	// An already finished ctx is reported as such.
	done, cancel3 := context.WithCancel(context.Background())
	cancel3()
	if _, err := short.WaitPriority(done, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(cancelled ctx) = %v, want context.Canceled", err)
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
	t.Parallel()
	q := realQuota(quotaConfig(config.Rate{N: 100, Period: time.Second}, 10, 30*time.Second))
	q.Pause(2 * time.Second)
	if got := q.Snapshot().PausedFor; !near(got, 2*time.Second, 50*time.Millisecond) {
		t.Errorf("PausedFor = %v, want ≈ 2s", got)
	}

	// Too short a deadline fails at once, saying the upstream is paused.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := q.WaitPriority(ctx, 0)
	if took := time.Since(begin); took > 50*time.Millisecond {
		t.Errorf("paused Wait took %v to fail, want at once", took)
	}
	ex := asExhausted(t, err)
	if !ex.Paused || ex.RetryAfter < 1800*time.Millisecond || ex.RetryAfter > 2*time.Second {
		t.Errorf("ExhaustedError = %+v, want Paused with RetryAfter ≈ 2s", ex)
	}
	if !strings.Contains(ex.Error(), "retry in 2s") {
		t.Errorf("Error() = %q, want it to say retry in 2s", ex.Error())
	}

	// A caller with time to spare waits the pause out.
	waited, err := q.WaitPriority(context.Background(), 0)
	if err != nil || waited < 1800*time.Millisecond || waited > 2600*time.Millisecond {
		t.Errorf("Wait during a 2s pause = %v, %v; want ≈ 2s", waited, err)
	}
	if got := q.Snapshot().PausedFor; got != 0 {
		t.Errorf("PausedFor = %v after the pause, want 0", got)
	}
}

func TestQuotaPauseReachesCallersAlreadyWaiting(t *testing.T) {
	t.Parallel()
	type result struct {
		waited time.Duration
		err    error
	}
	// waitThenPause queues one caller with timeout (0 = none) for a token
	// 1 s away, then pauses the upstream for 3 s while it waits.
	waitThenPause := func(timeout time.Duration) (result, time.Time) {
		q := realQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 30*time.Second))
		q.WaitPriority(context.Background(), 0) // the burst token
		done := make(chan result, 1)
		go func() {
			ctx := context.Background()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			w, err := q.WaitPriority(ctx, 0)
			done <- result{w, err}
		}()
		deadline := time.Now().Add(900 * time.Millisecond)
		for q.Snapshot().Waiting < 1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		pausedAt := time.Now()
		q.Pause(3 * time.Second)
		return <-done, pausedAt
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		r, pausedAt := waitThenPause(1500 * time.Millisecond)
		if since := time.Since(pausedAt); since > 500*time.Millisecond {
			t.Errorf("hurried caller learnt of the pause %v after it began, want at once", since)
		}
		if r.err == nil {
			t.Errorf("hurried caller granted after %v, want a Paused ExhaustedError", r.waited)
		} else if ex := asExhausted(t, r.err); !ex.Paused || ex.RetryAfter < 2500*time.Millisecond {
			t.Errorf("hurried caller: %+v, want Paused with RetryAfter ≈ 3s", ex)
		}
	})
	wg.Go(func() {
		r, pausedAt := waitThenPause(0)
		if r.err != nil {
			t.Errorf("patient caller: %v", r.err)
		} else if sent := time.Since(pausedAt); sent < 2900*time.Millisecond {
			t.Errorf("patient caller was granted %v into a 3s pause", sent)
		}
	})
	wg.Wait()
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
	t.Parallel()
	q := realQuota(quotaConfig(config.Rate{N: 1, Period: time.Second}, 1, 30*time.Second))
	q.WaitPriority(context.Background(), 0)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := q.WaitPriority(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	// Had the cancelled caller kept its token, the next would be ≈1.95 s away.
	probe, cancelProbe := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelProbe()
	_, err := q.WaitPriority(probe, 0)
	if ex := asExhausted(t, err); ex.RetryAfter > 1200*time.Millisecond {
		t.Errorf("next token %v away after a cancelled Wait, want ≈ 0.95s", ex.RetryAfter)
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
		t.Errorf("reserve at 300ms: %v, %+v, want the token at 315ms", err, w)
	} else {
		q.served(w)
	}
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
