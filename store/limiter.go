package store

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/ratelimit"
)

// limitScript is the shared rate limit: one GCRA bucket per window (KEYS,
// one per window), all-or-nothing. ARGV: max wait (µs), then interval (µs
// per token) and burst for each window. A caller is admitted when every
// window has a token by now+max wait; it then spends one from each, due at
// the latest of their times. Refused, it spends from none, and the window
// whose token comes last is named. Returns {admitted 0|1, wait or retry
// after (µs), deciding window (1-based, 0 = none), then remaining, reset
// (µs) and the next caller's wait (µs) for each window}.
var limitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local maxwait = tonumber(ARGV[1])
local n = #KEYS
local tats, grant, worst = {}, now, 0
for i = 1, n do
  local iv, b = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  local g = tat - (b - 1) * iv
  if g > grant then grant, worst = g, i end
end
local ok = 1
if grant - now > maxwait then ok = 0 end
local out = {ok, grant - now, worst}
for i = 1, n do
  local iv, b = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  local tat = tats[i]
  if ok == 1 then
    if tat < grant then tat = grant end
    tat = tat + iv
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  local rem = math.floor(b - (tat - now) / iv)
  if rem < 0 then rem = 0 end
  local nextwait = tat - (b - 1) * iv - now
  if nextwait < 0 then nextwait = 0 end
  out[#out + 1] = rem
  out[#out + 1] = tat - now
  out[#out + 1] = nextwait
end
return out
`)

// Limiter is a rate limit shared by every replica (a route's, or a tier's
// per client): one set of windows per key on the store. It implements
// proxy.RateLimiter as ratelimit.Limiter does, and its Decisions are made
// by the same ratelimit.NewDecision. While the store is unreachable the
// fallback (store.on_error) decides: a local ratelimit.Limiter holding
// this replica's share (ratelimit.Share), allow or deny. Use NewLimiter.
type Limiter struct {
	c       *Client
	prefix  string
	windows []config.Window
	args    []any // interval and burst per window, for the script
	local   *ratelimit.Limiter

	rejected   atomic.Uint64
	rejectedBy []atomic.Uint64
}

// NewLimiter returns the shared rate limit over windows (at least one) of
// kind ("rl" a route's, "tier" a tier's) name.
func NewLimiter(c *Client, kind, name string, windows ...config.Window) *Limiter {
	l := &Limiter{c: c, prefix: "{" + kind + ":" + name + ":", windows: windows, rejectedBy: make([]atomic.Uint64, len(windows))}
	for _, w := range windows {
		iv := int64(1)
		if ps := w.Rate.PerSecond(); ps > 0 {
			iv = max(int64(1e6/ps), 1)
		}
		l.args = append(l.args, iv, max(w.Burst, 1))
	}
	l.local = ratelimit.NewLimiter(ratelimit.Share(windows, c.replicas))
	return l
}

// Take spends one token from every window of key's buckets, in one atomic
// store call, and answers as ratelimit.Limiter.Take does; while the store
// does not answer, the fallback does.
func (l *Limiter) Take(key string, maxWait time.Duration) ratelimit.Decision {
	key = ratelimit.BoundKey(key)
	keys := make([]string, len(l.windows))
	for i := range keys {
		keys[i] = l.c.key(l.prefix, key, "}:", strconv.Itoa(i))
	}
	args := make([]any, 0, 1+len(l.args))
	args = append(args, max(maxWait.Microseconds(), 0))
	args = append(args, l.args...)
	var res []int64
	err := l.c.do("ratelimit", func(ctx context.Context) error {
		var err error
		res, err = limitScript.Run(ctx, l.c.rdb, keys, args...).Int64Slice()
		return err
	})
	if err != nil || len(res) != 3+3*len(l.windows) {
		return l.fallback(key, maxWait)
	}
	us := func(v int64) time.Duration { return max(time.Duration(v)*time.Microsecond, 0) }
	states := make([]ratelimit.WindowState, len(l.windows))
	for i := range states {
		states[i] = ratelimit.WindowState{Remaining: int(res[3+3*i]), Reset: us(res[4+3*i]), Wait: us(res[5+3*i])}
	}
	d := ratelimit.NewDecision(res[0] == 1, us(res[1]), max(int(res[2])-1, 0), states)
	if !d.Allowed {
		l.rejected.Add(1)
		l.rejectedBy[d.Window].Add(1)
	}
	return d
}

func (l *Limiter) fallback(key string, maxWait time.Duration) ratelimit.Decision {
	switch l.c.onError {
	case "allow":
		return ratelimit.Decision{Allowed: true, Remaining: l.windows[0].Burst}
	case "deny":
		l.rejected.Add(1)
		l.rejectedBy[0].Add(1)
		return ratelimit.Decision{RetryAfter: time.Second}
	}
	return l.local.Take(key, maxWait)
}

// Rejected counts the requests refused, shared or by the fallback.
func (l *Limiter) Rejected() uint64 { return l.rejected.Load() + l.local.Rejected() }

// RejectedBy counts the refusals window i (config order) decided, shared
// or by the fallback.
func (l *Limiter) RejectedBy(i int) uint64 {
	if i < 0 || i >= len(l.rejectedBy) {
		return 0
	}
	return l.rejectedBy[i].Load() + l.local.RejectedBy(i)
}

// Keys is how many keys the local fallback tracks (the shared keys live
// on the store, with an expiry, and are not counted).
func (l *Limiter) Keys() int { return l.local.Keys() }
