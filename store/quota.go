package store

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// The shared quota is GCRA (the token bucket written as one timestamp, the
// "theoretical arrival time" of the next token) on the store's own clock
// (TIME), so that replicas with skewed clocks agree. One script per
// attempt reads the pause, reserves the token and answers when it is due;
// no read-then-write. Times are microseconds, which a Lua double holds
// exactly until the year 2255.

// quotaScript: KEYS[1] the bucket's TAT, KEYS[2] the pause's end.
// ARGV: interval (µs per token; 0 = no rate, only pauses), burst, budget
// (µs the caller may wait). Returns {granted 0|1, µs until the token is
// due (or, refused, until one would be), paused 0|1, when}. A refusal spends
// nothing. The fourth value is the grant's time (Unix µs, the store's
// clock). During a pause every reservation is made as of its end, so the
// waiters it releases are spread at the rate rather than let go at once.
var quotaScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at, paused = now, 0
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
if p > now then at, paused = p, 1 end
if interval <= 0 then
  if at - now > budget then return {0, at - now, paused, at} end
  return {1, at - now, paused, at}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < at then tat = at end
local grant = tat - (burst - 1) * interval
if grant < at then grant = at end
if grant - now > budget then return {0, grant - now, paused, grant} end
local nt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.ceil((nt - now) / 1000) + 1000)
return {1, grant - now, paused, grant}
`)

// refundScript gives a token back: the TAT moves one interval earlier (a
// TAT in the past is a full bucket, so the bucket never exceeds burst).
var refundScript = redis.NewScript(`
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nt = tat - tonumber(ARGV[1])
if nt <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.ceil((nt - now) / 1000) + 1000)
return 1
`)

// pauseScript extends the pause to now+ARGV[1] µs (never shortens it);
// the key expires with it. Returns the µs of pause in force.
var pauseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local u = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur > u then u = cur end
redis.call('SET', KEYS[1], string.format('%.0f', u), 'PX', math.ceil((u - now) / 1000) + 1)
return u - now
`)

// snapshotScript returns {now, TAT, pause end}.
var snapshotScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return {string.format('%.0f', now), redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0'}
`)

// Quota is an upstream quota shared by every replica: it implements
// policy.Quota like *ratelimit.Quota, which it falls back on (at
// rate/replicas) while the store is unreachable and on_error is local.
// Use NewQuota.
type Quota struct {
	c        *Client
	keys     []string // bucket, pause
	interval time.Duration
	burst    int
	maxWait  time.Duration
	honor    bool
	maxPause time.Duration
	rate     string
	local    *ratelimit.Quota

	mu          sync.Mutex
	pausedUntil time.Time     // the latest pause this replica set
	pauseCh     chan struct{} // closed, and replaced, when it grows
	lastSlept   time.Time     // see release
	lastDue     time.Time     // the latest shared grant this replica handed out; see fallbackWait
	seenFall    uint64        // the client's fallback that lastDue was last adjusted for

	waiting   atomic.Int64
	exhausted atomic.Uint64
}

// NewQuota returns the shared quota of upstream name, with cfg's settings
// (as ratelimit.NewQuota reads them).
func NewQuota(c *Client, name string, cfg config.Quota) *Quota {
	q := &Quota{
		c: c, keys: []string{c.key("{quota:", name, "}"), c.key("{quota:", name, "}:pause")},
		burst: max(cfg.Burst, 1), maxWait: max(cfg.MaxWait.D(), 0), honor: cfg.HonorRetryAfter,
		maxPause: cfg.MaxPause.D(), rate: cfg.Rate.String(), pauseCh: make(chan struct{}),
	}
	if ps := cfg.Rate.PerSecond(); ps > 0 {
		q.interval = time.Duration(float64(time.Second) / ps)
	}
	q.local = ratelimit.NewQuota(shareOf(cfg, c.replicas))
	return q
}

// shareOf is one replica's share of a quota: the same tokens over a period
// replicas times as long, and burst divided (at least 1).
func shareOf(cfg config.Quota, replicas int) config.Quota {
	cfg.Rate.Period *= time.Duration(replicas)
	cfg.Burst = max(cfg.Burst/replicas, 1)
	return cfg
}

// Wait is policy.Quota's: it spends a token from the shared bucket, told by
// the store when the token is due, and sleeps locally until then. A token
// that cannot be had within max_wait (or ctx's deadline) fails at once with
// *ratelimit.ExhaustedError, nothing spent. While the store is unreachable
// the fallback (store.on_error) answers instead.
func (q *Quota) Wait(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	budget := q.maxWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, dl.Sub(start))
	}
	slept := false
	for {
		left := budget - time.Since(start)
		q.mu.Lock()
		pauseCh := q.pauseCh
		q.mu.Unlock()
		var res []int64
		callStart := time.Now()
		err := q.c.do("quota", func(ctx context.Context) error {
			var err error
			res, err = quotaScript.Run(ctx, q.c.rdb, q.keys, q.interval.Microseconds(), q.burst, max(left.Microseconds(), 0)).Int64Slice()
			return err
		})
		if err != nil || len(res) != 4 {
			return q.fallbackWait(ctx, start, budget)
		}
		due := time.Duration(res[1]) * time.Microsecond
		if res[0] == 0 {
			q.exhausted.Add(1)
			return 0, &ratelimit.ExhaustedError{RetryAfter: due, Paused: res[2] == 1}
		}
		if due <= 0 && !slept {
			return 0, nil
		}
		slept = true
		grantAt := dueAt(callStart, due, res[3])
		q.mu.Lock()
		if grantAt.After(q.lastDue) {
			q.lastDue = grantAt
		}
		q.mu.Unlock()
		retry, err := q.sleep(ctx, grantAt, pauseCh)
		if err != nil {
			return time.Since(start), err
		}
		if retry {
			continue // a pause of ours now ends after our grant: queue again behind it
		}
		if paceAt := q.release(); paceAt.After(time.Now()) {
			if _, err := q.sleep(ctx, paceAt, nil); err != nil {
				return time.Since(start), err
			}
		}
		return time.Since(start), nil
	}
}

// fallbackWait answers for the store: a local bucket at rate/replicas,
// no limit, or quota_exhausted, as store.on_error says.
//
// Why the hold: the store may have told this replica's waiters that their
// tokens are due up to max_wait ahead, and they still go when the store
// dies. The local bucket grants nothing before the last of them, or the
// upstream would see both schedules at once (the fleet test saw 429s).
func (q *Quota) fallbackWait(ctx context.Context, start time.Time, budget time.Duration) (time.Duration, error) {
	switch q.c.onError {
	case "allow":
		return 0, nil
	case "deny":
		q.exhausted.Add(1)
		return 0, &ratelimit.ExhaustedError{RetryAfter: time.Second}
	}
	q.mu.Lock()
	if fall := q.c.falls.Load(); fall != q.seenFall {
		// A new fallback: the local bucket starts as if it had just
		// granted, one local interval after the last shared grant, not
		// full, so that the switch sends no burst on top of the schedule.
		q.seenFall = fall
		q.lastDue = later(q.lastDue, time.Now()).Add(q.interval * time.Duration(q.c.replicas))
	}
	hold := time.Until(q.lastDue)
	q.mu.Unlock()
	if hold > 0 {
		if time.Since(start)+hold > budget {
			q.exhausted.Add(1)
			return 0, &ratelimit.ExhaustedError{RetryAfter: hold}
		}
		q.waiting.Add(1)
		timer := time.NewTimer(hold)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			q.waiting.Add(-1)
			return time.Since(start), ctx.Err()
		}
		q.waiting.Add(-1)
	}
	waited, err := q.local.Wait(ctx)
	if hold > 0 {
		waited = time.Since(start)
	}
	return waited, err
}

// sleep waits until grantAt. It returns retry=true when a pause this
// replica set meanwhile ends after grantAt (the token is then given back);
// on ctx's end it gives the token back and returns ctx.Err().
func (q *Quota) sleep(ctx context.Context, grantAt time.Time, pauseCh <-chan struct{}) (retry bool, err error) {
	q.waiting.Add(1)
	defer q.waiting.Add(-1)
	timer := time.NewTimer(time.Until(grantAt))
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return false, nil
		case <-ctx.Done():
			q.Refund()
			return false, ctx.Err()
		case <-pauseCh:
			q.mu.Lock()
			later := q.pausedUntil.After(grantAt)
			pauseCh = q.pauseCh
			q.mu.Unlock()
			if later {
				q.Refund()
				return true, nil
			}
		}
	}
}

// release paces this replica's sleepers at least one token interval apart
// in real time, as ratelimit.Quota does and for the same reason: a sleeper
// woken late must not be followed on schedule by the next one. It returns
// when the caller may go.
func (q *Quota) release() time.Time {
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.interval <= 0 {
		return now
	}
	if next := q.lastSlept.Add(q.interval); now.Before(next) {
		q.lastSlept = next
		return next
	}
	q.lastSlept = now
	return now
}

// Refund gives back a token Wait granted for an attempt never sent: to the
// store, or to the local bucket while falling back.
func (q *Quota) Refund() {
	if q.interval <= 0 {
		return
	}
	err := q.c.do("refund", func(ctx context.Context) error {
		return refundScript.Run(ctx, q.c.rdb, q.keys[:1], q.interval.Microseconds()).Err()
	})
	if err != nil && q.c.onError == "local" {
		q.local.Refund()
	}
}

// Pause is policy.Quota's: it holds every replica's tokens back for d
// (capped at max_pause) through a key with that expiry, which every
// replica's next Wait reads. The local fallback is paused too, so that the
// pause holds if the store goes away. It returns the pause in force.
func (q *Quota) Pause(d time.Duration) time.Duration {
	if !q.honor || d <= 0 || q.maxPause <= 0 {
		return 0
	}
	d = min(d, q.maxPause)
	inForce := q.local.Pause(d)
	var us int64
	err := q.c.do("pause", func(ctx context.Context) error {
		var err error
		us, err = pauseScript.Run(ctx, q.c.rdb, q.keys[1:], d.Microseconds()).Int64()
		return err
	})
	if err == nil {
		inForce = time.Duration(us) * time.Microsecond
	}
	until := time.Now().Add(inForce)
	q.mu.Lock()
	if until.After(q.pausedUntil) {
		q.pausedUntil = until
		close(q.pauseCh)
		q.pauseCh = make(chan struct{})
	}
	q.mu.Unlock()
	return inForce
}

// Snapshot is the shared bucket's state (one store call), or the local
// fallback's while the store is unreachable.
func (q *Quota) Snapshot() ratelimit.QuotaSnapshot {
	var vals []string
	err := q.c.do("snapshot", func(ctx context.Context) error {
		var err error
		vals, err = snapshotScript.Run(ctx, q.c.rdb, q.keys).StringSlice()
		return err
	})
	if err != nil || len(vals) != 3 {
		s := q.local.Snapshot()
		s.Exhausted += q.exhausted.Load()
		s.Waiting += int(q.waiting.Load())
		return s
	}
	now, tat, pause := atof(vals[0]), atof(vals[1]), atof(vals[2])
	tokens := float64(q.burst)
	if q.interval > 0 && tat > now {
		tokens = math.Max(float64(q.burst)-(tat-now)/float64(q.interval.Microseconds()), 0)
	}
	return ratelimit.QuotaSnapshot{
		Tokens: tokens, Burst: q.burst, Rate: q.rate,
		PausedFor: max(time.Duration(pause-now)*time.Microsecond, 0),
		Waiting:   int(q.waiting.Load()), Exhausted: q.exhausted.Load(),
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// dueAt is when a token the store granted may be used: its time on the
// store's clock, but never before callStart+due.
//
// Why not simply now+due: a reply that comes back late (a busy store, a
// busy replica) would shift the send by that much, and the next replica's
// on-time send would follow too closely; an upstream with little burst
// tolerance answers that with 429 (the fleet test saw it under -race).
// The store's clock is the replicas' clock give or take NTP's skew; the
// floor keeps a replica whose clock runs ahead from sending early by more
// than the request's trip to the store.
func dueAt(callStart time.Time, due time.Duration, whenUs int64) time.Time {
	floor := callStart.Add(due)
	if at := time.UnixMicro(whenUs); at.After(floor) {
		return at
	}
	return floor
}
