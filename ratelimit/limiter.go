// Package ratelimit holds breakwater's two token buckets: Limiter, which
// limits the callers of a route (one bucket per window per client key), and Quota,
// which keeps the attempts sent to an upstream inside that upstream's own
// limit and honours its Retry-After. Neither logs nor knows about metrics:
// they count what the dashboard needs and the proxy reads the counts.
package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// DefaultMaxKeys is how many keys a Limiter tracks.
const DefaultMaxKeys = 100_000

// DefaultIdleTTL is how long a Limiter keeps a key nobody uses, once its
// buckets are full again.
const DefaultIdleTTL = time.Minute

// maxKeyLen bounds the bytes a limiter keeps per key, in this process or
// on the store. Keys come from client headers (key: header:NAME) that may
// be up to max_header_bytes long; a longer key is replaced by its digest
// (BoundKey), so that DefaultMaxKeys keys cannot cost more than a few
// dozen MiB. The digest is the same on every replica, so that a shared
// limiter's long keys name one bucket for all of them.
const maxKeyLen = 128

const (
	// shardCount splits a large Limiter so that Takes for different keys
	// rarely wait for one another. Small limiters (tests, tiny caps) use a
	// single shard so that their key cap and LRU order are exact.
	shardCount       = 16
	minKeysPerShard  = 256
	sweepPerTake     = 2 // idle keys dropped per Take, at most: keeps Take O(1)
	shardPaddingSize = 64
)

// Limiter limits the callers of one route, or one tier's clients: for
// each key, one token bucket per window, and a request is admitted only
// when every window has a token (a refused request spends from none). A
// single window of Burst tokens refilled at Rate is Part 1's rate limit;
// `rates: [60/1m, 1000/1h]` is two windows of 60 and 1000 tokens. The zero
// value is not usable; call NewLimiter.
//
// Memory is bounded: at most DefaultMaxKeys keys are kept, the least
// recently used one being forgotten to make room, and a key that has been
// idle for DefaultIdleTTL with every bucket full again is dropped at no
// cost, since new buckets for it would be just as full.
type Limiter struct {
	windows []window // nil means no limit
	idleTTL int64    // nanoseconds
	now     func() time.Time
	epoch   time.Time // bucket times are int64 nanoseconds since epoch
	seed    maphash.Seed
	shards  []shard

	rejected   atomic.Uint64
	rejectedBy []atomic.Uint64 // per window: the refusals it decided
}

// window is one of a Limiter's token buckets, as configured.
type window struct {
	perNs float64 // tokens per nanosecond
	burst float64
	cfg   config.Window
}

// shard is one lock's worth of buckets, kept in a map and in a doubly
// linked list from most (head) to least (tail) recently used.
type shard struct {
	mu         sync.Mutex
	buckets    map[string]*bucket
	head, tail *bucket
	max        int

	// Shards sit side by side in a slice; padding keeps two busy shards'
	// locks off one cache line.
	_ [shardPaddingSize]byte
}

type bucket struct {
	key        string
	prev, next *bucket
	lastUsed   int64 // nanoseconds since Limiter.epoch
	fullAt     int64 // when every window is full again, if nobody takes a token
	w          []level
	one        [1]level // w's storage for a single window: one allocation per key
}

// level is one window's tokens at a time: tokens at nanosecond at (since
// the epoch). Tokens go below zero for reservations (a waiting caller).
type level struct {
	tokens float64
	at     int64
}

// Decision is the outcome of one Take. Its top-level fields describe one
// window, Window: the one that refused a request that was not allowed, or
// for an allowed one the window with the fewest tokens left. A Limiter of
// one window (and any RateLimiter that knows a single window) fills only
// these; one of several windows also reports each of them in Windows.
type Decision struct {
	// Allowed is true when the caller may proceed, after sleeping Wait.
	Allowed bool
	// Wait is how long an allowed caller must sleep before going on; its
	// token is reserved in every window. Zero when tokens were available at once.
	Wait time.Duration
	// RetryAfter is, for a caller that was not allowed, the time until
	// every window will have a token. Zero when Allowed.
	RetryAfter time.Duration
	// Remaining is the whole tokens left in Window's bucket after this Take.
	Remaining int
	// Reset is the time until Window's bucket is full again if nobody
	// takes a token meanwhile.
	Reset time.Duration
	// Window is the index, in the limiter's windows (config order), of the
	// window the fields above describe; 0 for a single window.
	Window int
	// Windows is every window's state after this Take, in config order,
	// when there are several; nil for a single window.
	Windows []WindowState
}

// WindowState is one window's part of a Decision.
type WindowState struct {
	// Remaining is the whole tokens left after this Take.
	Remaining int
	// Reset is the time until the bucket is full again.
	Reset time.Duration
	// Wait is the time until this window has a token for the next caller
	// (0 when it has one now).
	Wait time.Duration
}

// NewLimiter returns a Limiter over windows (config.RateLimit's Windows,
// or config.WindowsOf a tier's rate_limits). No windows, or only zero
// rates, means no limit: every Take is allowed and no key is tracked. It
// tracks at most DefaultMaxKeys keys and forgets one idle for
// DefaultIdleTTL once its buckets are full again.
func NewLimiter(ws []config.Window) *Limiter {
	return newLimiter(ws, time.Now, DefaultMaxKeys, DefaultIdleTTL)
}

// newLimiter is NewLimiter with its clock, key cap (the least recently
// used key is forgotten to make room) and idle TTL.
func newLimiter(ws []config.Window, now func() time.Time, maxKeys int, idleTTL time.Duration) *Limiter {
	l := &Limiter{idleTTL: int64(idleTTL), now: now, seed: maphash.MakeSeed()}
	for _, w := range ws {
		if w.Rate.PerSecond() > 0 {
			l.windows = append(l.windows, window{perNs: w.Rate.PerSecond() / 1e9, burst: float64(max(w.Burst, 1)), cfg: w})
		}
	}
	l.rejectedBy = make([]atomic.Uint64, len(l.windows))
	l.epoch = l.now()
	n := 1
	if maxKeys >= shardCount*minKeysPerShard {
		n = shardCount
	}
	l.shards = make([]shard, n)
	for i := range l.shards {
		// Per-shard caps round down, so the total never exceeds maxKeys.
		l.shards[i].max = maxKeys / n
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// Windows is the limiter's windows, in config order (nil: no limit).
func (l *Limiter) Windows() []config.Window {
	ws := make([]config.Window, len(l.windows))
	for i, w := range l.windows {
		ws[i] = w.cfg
	}
	return ws
}

// Take spends one token of every window of key's buckets. If each has a
// token now, the caller is Allowed at once. If each will have one within
// maxWait, the caller is Allowed with Wait set to how long it must sleep
// first; the tokens are reserved for it, so it must not ask again.
// Otherwise it is not allowed, nothing is spent in any window, and
// RetryAfter says when every window would have a token. maxWait <= 0
// means reject at once. key "" is a bucket like any other (the proxy uses
// it for key: none).
//
// An allowed caller that ends up not waiting (its client left) does not
// give its tokens back: a client that keeps leaving should not get more.
func (l *Limiter) Take(key string, maxWait time.Duration) Decision {
	if len(l.windows) == 0 {
		return Decision{Allowed: true}
	}
	key = BoundKey(key)
	t := int64(l.now().Sub(l.epoch))
	sh := l.shardFor(key)

	sh.mu.Lock()
	b := sh.buckets[key]
	if b == nil {
		b = sh.add(key, l.newLevels(t))
	} else {
		sh.toFront(b)
	}
	d := l.spend(b, t, maxWait)
	b.lastUsed = t
	sh.sweep(t, l.idleTTL)
	sh.mu.Unlock()

	if !d.Allowed {
		l.rejected.Add(1)
		l.rejectedBy[d.Window].Add(1)
	}
	return d
}

// newLevels is a new key's buckets: full.
func (l *Limiter) newLevels(t int64) *bucket {
	b := &bucket{}
	if len(l.windows) == 1 {
		b.w = b.one[:]
	} else {
		b.w = make([]level, len(l.windows))
	}
	for i, w := range l.windows {
		b.w[i] = level{tokens: w.burst, at: t}
	}
	return b
}

// spend decides one Take; the shard lock is held.
func (l *Limiter) spend(b *bucket, t int64, maxWait time.Duration) Decision {
	var wait time.Duration
	deciding := 0
	for i := range l.windows {
		w, lv := &l.windows[i], &b.w[i]
		lv.tokens = min(w.burst, lv.tokens+float64(t-lv.at)*w.perNs)
		lv.at = t
		if need := w.durationFor(1 - lv.tokens); need > wait {
			wait, deciding = need, i // the window that keeps the caller longest decides
		}
	}
	allowed := wait <= max(maxWait, 0)
	if allowed {
		for i := range b.w {
			b.w[i].tokens--
		}
	}
	states := make([]WindowState, len(l.windows))
	var fullAt int64
	for i := range l.windows {
		states[i] = l.state(b, i)
		fullAt = max(fullAt, t+int64(states[i].Reset))
	}
	b.fullAt = fullAt
	return NewDecision(allowed, wait, deciding, states)
}

// NewDecision is the Decision of a Take over every window's state after
// it (config order), for a limiter here or on the store: allowed after
// sleeping wait, or refused (wait is then the RetryAfter) by window
// refused. An allowed caller hears of its tightest window: the fewest
// tokens left, then the longest wait for the next.
func NewDecision(allowed bool, wait time.Duration, refused int, states []WindowState) Decision {
	d := Decision{Allowed: allowed, Window: refused}
	if allowed {
		d.Wait = wait
		fewest, longest := math.MaxInt, time.Duration(-1)
		for i, st := range states {
			if st.Remaining < fewest || st.Remaining == fewest && st.Wait > longest {
				fewest, longest, d.Window = st.Remaining, st.Wait, i
			}
		}
	} else {
		d.RetryAfter = wait
	}
	if d.Window < len(states) {
		d.Remaining, d.Reset = states[d.Window].Remaining, states[d.Window].Reset
	}
	if len(states) > 1 {
		d.Windows = states
	}
	return d
}

// Share is one replica's share of windows while the store that shares
// them is away: the same tokens over a period replicas times as long, and
// the burst divided (at least 1).
func Share(ws []config.Window, replicas int) []config.Window {
	out := make([]config.Window, len(ws))
	for i, w := range ws {
		w.Rate.Period *= time.Duration(max(replicas, 1))
		w.Burst = max(w.Burst/max(replicas, 1), 1)
		out[i] = w
	}
	return out
}

// state is window i of b as a Decision reports it.
func (l *Limiter) state(b *bucket, i int) WindowState {
	w, lv := &l.windows[i], &b.w[i]
	st := WindowState{Reset: w.durationFor(w.burst - lv.tokens), Wait: w.durationFor(1 - lv.tokens)}
	if lv.tokens >= 1 {
		st.Remaining = int(lv.tokens)
	}
	return st
}

// durationFor is how long the window takes to gain n tokens, rounded up
// so that a caller who sleeps that long finds them.
func (w *window) durationFor(n float64) time.Duration {
	if n <= 0 {
		return 0
	}
	ns := math.Ceil(n / w.perNs)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

// BoundKey is key, or its 128-bit SHA-256 digest (hex, after "#") when
// key is longer than maxKeyLen.
func BoundKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "#" + hex.EncodeToString(sum[:16])
}

func (l *Limiter) shardFor(key string) *shard {
	if len(l.shards) == 1 {
		return &l.shards[0]
	}
	return &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
}

// Keys is how many keys are tracked now.
func (l *Limiter) Keys() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// Rejected counts the Takes that were not allowed since the Limiter was made.
func (l *Limiter) Rejected() uint64 { return l.rejected.Load() }

// RejectedBy counts the refusals that window i (config order) decided.
func (l *Limiter) RejectedBy(i int) uint64 {
	if i < 0 || i >= len(l.rejectedBy) {
		return 0
	}
	return l.rejectedBy[i].Load()
}

// add tracks a new key at the head, first forgetting the least recently used
// key if the shard is full.
func (sh *shard) add(key string, b *bucket) *bucket {
	if len(sh.buckets) >= sh.max && sh.tail != nil {
		sh.remove(sh.tail)
	}
	// Clone: key may be a slice of a much larger string (a request line, a
	// header block) that the map must not keep alive.
	b.key = strings.Clone(key)
	sh.buckets[b.key] = b
	sh.pushFront(b)
	return b
}

// sweep drops up to sweepPerTake least recently used keys that have been
// idle for ttl and whose buckets are full again.
func (sh *shard) sweep(now, ttl int64) {
	for range sweepPerTake {
		b := sh.tail
		if b == nil || b == sh.head || now-b.lastUsed < ttl || now < b.fullAt {
			return
		}
		sh.remove(b)
	}
}

func (sh *shard) remove(b *bucket) {
	delete(sh.buckets, b.key)
	sh.unlink(b)
}

func (sh *shard) toFront(b *bucket) {
	if sh.head == b {
		return
	}
	sh.unlink(b)
	sh.pushFront(b)
}

func (sh *shard) pushFront(b *bucket) {
	b.prev, b.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = b
	}
	sh.head = b
	if sh.tail == nil {
		sh.tail = b
	}
}

func (sh *shard) unlink(b *bucket) {
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		sh.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	} else {
		sh.tail = b.prev
	}
	b.prev, b.next = nil, nil
}
