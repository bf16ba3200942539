package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
// after (µs), refusing window (1-based, 0 = none), then remaining and
// reset (µs) for each window}.
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
local out = {ok, grant - now, 0}
if ok == 0 then out[3] = worst end
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
  out[#out + 1] = rem
  out[#out + 1] = tat - now
end
return out
`)

// Window is one token bucket of a rate limit: Rate with bursts of Burst
// (at least 1).
type Window struct {
	Rate  config.Rate
	Burst int
}

// WindowState is one window after a Take.
type WindowState struct {
	// Remaining is the whole tokens left.
	Remaining int
	// Reset is the time until the window's bucket is full again.
	Reset time.Duration
}

// Decision is a multi-window Take: every window must admit, and a refusal
// spends from none.
type Decision struct {
	Allowed bool
	// Wait is how long an allowed caller sleeps first (its tokens are
	// reserved); RetryAfter is, refused, when every window would admit.
	Wait, RetryAfter time.Duration
	// Refused is the index of the window that refused; -1 when allowed.
	Refused int
	// Windows are in the order given to NewLimiter.
	Windows []WindowState
}

// Limiter is a route's rate limit shared by every replica: one set of
// windows per key on the store. It implements proxy.RateLimiter through
// Take (its first window as ratelimit.Decision) and TakeWindows for every
// window. While the store is unreachable the fallback (store.on_error)
// decides: a local ratelimit.Limiter at rate/replicas, allow or deny.
// Use NewLimiter.
type Limiter struct {
	c       *Client
	prefix  string
	windows []Window
	args    []any // interval and burst per window, for the script
	local   *ratelimit.Limiter

	rejected atomic.Uint64
}

// maxKeyLen: longer keys (client headers) are hashed, so that a key on the
// store never costs more than a few dozen bytes.
const maxKeyLen = 128

// NewLimiter returns route's shared rate limit over windows (at least one).
func NewLimiter(c *Client, route string, windows ...Window) *Limiter {
	l := &Limiter{c: c, prefix: "{rl:" + route + ":", windows: windows}
	for _, w := range windows {
		iv := int64(1)
		if ps := w.Rate.PerSecond(); ps > 0 {
			iv = max(int64(1e6/ps), 1)
		}
		l.args = append(l.args, iv, max(w.Burst, 1))
	}
	// The local stand-in holds this replica's share of every window.
	shares := make([]config.Window, len(windows))
	for i, w := range windows {
		share := w.Rate
		share.Period *= time.Duration(c.replicas)
		shares[i] = config.Window{Rate: share, Burst: max(w.Burst/c.replicas, 1)}
	}
	l.local = ratelimit.NewWindows(shares)
	return l
}

// Take spends a token of every window of key's buckets and answers as
// ratelimit.Limiter.Take does (proxy.RateLimiter), from the store: the
// top-level fields describe the window that refused, or for an allowed
// request the one with the fewest tokens left; Windows lists them all
// when there are several.
func (l *Limiter) Take(key string, maxWait time.Duration) ratelimit.Decision {
	d, ok := l.TakeWindows(key, maxWait)
	if !ok {
		return l.fallback(key, maxWait)
	}
	out := ratelimit.Decision{Allowed: d.Allowed, Wait: d.Wait, RetryAfter: d.RetryAfter}
	w := d.Refused
	if w < 0 {
		w = 0
		for i, s := range d.Windows {
			if s.Remaining < d.Windows[w].Remaining {
				w = i
			}
		}
	}
	if w < len(d.Windows) {
		out.Window, out.Remaining, out.Reset = w, d.Windows[w].Remaining, d.Windows[w].Reset
	}
	if len(d.Windows) > 1 {
		out.Windows = make([]ratelimit.WindowState, len(d.Windows))
		for i, s := range d.Windows {
			out.Windows[i] = ratelimit.WindowState{Remaining: s.Remaining, Reset: s.Reset}
		}
	}
	return out
}

// TakeWindows spends one token from every window of key's buckets, in one
// atomic store call; ok is false when the store did not answer (the caller
// then uses its fallback).
func (l *Limiter) TakeWindows(key string, maxWait time.Duration) (d Decision, ok bool) {
	if len(key) > maxKeyLen {
		sum := sha256.Sum256([]byte(key))
		key = "#" + hex.EncodeToString(sum[:16])
	}
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
	if err != nil || len(res) != 3+2*len(l.windows) {
		return Decision{}, false
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	d = Decision{Allowed: res[0] == 1, Refused: int(res[2]) - 1}
	if d.Allowed {
		d.Wait = max(us(res[1]), 0)
	} else {
		d.RetryAfter = us(res[1])
		l.rejected.Add(1)
	}
	for i := range l.windows {
		d.Windows = append(d.Windows, WindowState{Remaining: int(res[3+2*i]), Reset: us(res[4+2*i])})
	}
	return d, true
}

func (l *Limiter) fallback(key string, maxWait time.Duration) ratelimit.Decision {
	switch l.c.onError {
	case "allow":
		return ratelimit.Decision{Allowed: true, Remaining: l.windows[0].Burst}
	case "deny":
		l.rejected.Add(1)
		return ratelimit.Decision{RetryAfter: time.Second}
	}
	return l.local.Take(key, maxWait)
}

// Rejected counts the requests refused, shared or by the fallback.
func (l *Limiter) Rejected() uint64 { return l.rejected.Load() + l.local.Rejected() }

// Keys is how many keys the local fallback tracks (the shared keys live
// on the store, with an expiry, and are not counted).
func (l *Limiter) Keys() int { return l.local.Keys() }
