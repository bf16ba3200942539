package store

import (
	"context"
	"math"
	"sync"
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
// (µs the caller may wait; negative: no limit). Returns {granted 0|1, µs until the token is
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
  if budget >= 0 and at - now > budget then return {0, at - now, paused, at} end
  return {1, at - now, paused, at}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < at then tat = at end
local grant = tat - (burst - 1) * interval
if grant < at then grant = at end
if budget >= 0 and grant - now > budget then return {0, grant - now, paused, grant} end
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

// quotaSource is the shared bucket as a ratelimit.TokenSource: the
// Quota around it (NewQuota) queues, paces and pauses as it does for a
// local one. While the store is unreachable and on_error is local, a local
// bucket at rate/replicas answers instead.
type quotaSource struct {
	c        *Client
	keys     []string // bucket, pause
	interval time.Duration
	burst    int
	local    *ratelimit.Bucket

	mu       sync.Mutex
	lastDue  time.Time // the latest shared grant this replica handed out; see fallback
	seenFall uint64    // the client's fallback that lastDue was last adjusted for
}

// NewQuota returns the shared quota of upstream name, with cfg's settings
// (as ratelimit.NewQuota reads them); obs hears of its queue.
func NewQuota(c *Client, name string, cfg config.Quota, obs ratelimit.QueueObserver) *ratelimit.Quota {
	src := &quotaSource{
		c: c, keys: []string{c.key("{quota:", name, "}"), c.key("{quota:", name, "}:pause")},
		burst: max(cfg.Burst, 1),
	}
	if ps := cfg.Rate.PerSecond(); ps > 0 {
		src.interval = time.Duration(float64(time.Second) / ps)
	}
	share := ratelimit.Share([]config.Window{{Rate: cfg.Rate, Burst: cfg.Burst}}, c.replicas)[0]
	local := cfg
	local.Rate, local.Burst = share.Rate, share.Burst
	src.local = ratelimit.NewBucket(local)
	return ratelimit.NewQuota(cfg, src, obs)
}

// Take is ratelimit.TokenSource's: one store call spends a token from the
// shared bucket and says when it is due; a pause another replica set is
// read there too.
func (s *quotaSource) Take(now, at, limit time.Time) (time.Time, error) {
	budget := int64(-1) // no limit
	if !limit.IsZero() {
		budget = max(limit.Sub(now).Microseconds(), 0)
	}
	var res []int64
	err := s.c.do("quota", func(ctx context.Context) error {
		var err error
		res, err = quotaScript.Run(ctx, s.c.rdb, s.keys, s.interval.Microseconds(), s.burst, budget).Int64Slice()
		return err
	})
	if err != nil || len(res) != 4 {
		return s.fallback(now, at, limit)
	}
	due := time.Duration(res[1]) * time.Microsecond
	if res[0] == 0 {
		return time.Time{}, &ratelimit.ExhaustedError{RetryAfter: due, Paused: res[2] == 1}
	}
	if due <= 0 {
		return now, nil
	}
	grantAt := dueAt(now, due, res[3])
	s.mu.Lock()
	s.lastDue = later(s.lastDue, grantAt)
	s.mu.Unlock()
	return grantAt, nil
}

// fallback answers for the store: a local bucket at rate/replicas, no
// limit, or quota_exhausted, as store.on_error says.
//
// Why the hold: the store may have told this replica's waiters that their
// tokens are due up to max_wait ahead, and they still go when the store
// dies. The local bucket grants nothing before the last of them, or the
// upstream would see both schedules at once (the fleet test saw 429s).
func (s *quotaSource) fallback(now, at, limit time.Time) (time.Time, error) {
	switch s.c.onError {
	case "allow":
		return now, nil
	case "deny":
		return time.Time{}, &ratelimit.ExhaustedError{RetryAfter: time.Second}
	}
	s.mu.Lock()
	if fall := s.c.falls.Load(); fall != s.seenFall {
		// A new fallback: the local bucket starts as if it had just
		// granted, one local interval after the last shared grant, not
		// full, so that the switch sends no burst on top of the schedule.
		s.seenFall = fall
		s.lastDue = later(s.lastDue, now).Add(s.interval * time.Duration(s.c.replicas))
	}
	hold := s.lastDue
	s.mu.Unlock()
	return s.local.Take(now, later(at, hold), limit)
}

// Refund is ratelimit.TokenSource's: to the store, or to the local bucket
// while falling back.
func (s *quotaSource) Refund() {
	if s.interval <= 0 {
		return
	}
	err := s.c.do("refund", func(ctx context.Context) error {
		return refundScript.Run(ctx, s.c.rdb, s.keys[:1], s.interval.Microseconds()).Err()
	})
	if err != nil && s.c.onError == "local" {
		s.local.Refund()
	}
}

// Pause is ratelimit.TokenSource's: it holds every replica's tokens back
// for d through a key with that expiry, which every replica's next Take
// reads. The Quota keeps the pause for this replica too, so that it holds
// if the store goes away.
func (s *quotaSource) Pause(_ time.Time, d time.Duration) time.Duration {
	var us int64
	err := s.c.do("pause", func(ctx context.Context) error {
		var err error
		us, err = pauseScript.Run(ctx, s.c.rdb, s.keys[1:], d.Microseconds()).Int64()
		return err
	})
	if err != nil {
		return d
	}
	return time.Duration(us) * time.Microsecond
}

// Level is ratelimit.TokenSource's: the shared bucket's (one store call),
// or the local fallback's while the store is unreachable.
func (s *quotaSource) Level(now time.Time) (tokens float64, paused time.Duration) {
	var vals []string
	err := s.c.do("snapshot", func(ctx context.Context) error {
		var err error
		vals, err = snapshotScript.Run(ctx, s.c.rdb, s.keys).StringSlice()
		return err
	})
	if err != nil || len(vals) != 3 {
		return s.local.Level(now)
	}
	storeNow, tat, pause := atof(vals[0]), atof(vals[1]), atof(vals[2])
	tokens = float64(s.burst)
	if s.interval > 0 && tat > storeNow {
		tokens = math.Max(float64(s.burst)-(tat-storeNow)/float64(s.interval.Microseconds()), 0)
	}
	return tokens, max(time.Duration(pause-storeNow)*time.Microsecond, 0)
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
