// Package ratelimit holds breakwater's two token buckets: Limiter, which
// limits the callers of a route (one bucket per client key), and Quota,
// which keeps the attempts sent to an upstream inside that upstream's own
// limit and honours its Retry-After. Neither logs nor knows about metrics:
// they count what the dashboard needs and the proxy reads the counts.
package ratelimit

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/breakwater-proxy/breakwater/config"
)

const (
	// maxKeyLen bounds the bytes a Limiter keeps per key. Keys come from
	// client headers (key: header:NAME) that may be up to max_header_bytes
	// long; a longer key is replaced by a 16-byte seeded digest, so that
	// DefaultMaxKeys keys cannot cost more than a few dozen MiB. Two long
	// keys sharing a digest would merely share a bucket, and the seed is
	// per Limiter, so a client cannot aim for a collision.
	maxKeyLen = 128

	// shardCount splits a large Limiter so that Takes for different keys
	// rarely wait for one another. Small limiters (tests, tiny caps) use a
	// single shard so that their key cap and LRU order are exact.
	shardCount       = 16
	minKeysPerShard  = 256
	sweepPerTake     = 2 // idle keys dropped per Take, at most: keeps Take O(1)
	shardPaddingSize = 64
)

// Limiter limits the callers of one route: a token bucket of Burst tokens,
// refilled at Rate, per key. The zero value is not usable; call NewLimiter.
//
// Memory is bounded: at most max-keys buckets are kept (WithMaxKeys), the
// least recently used one being forgotten to make room, and a key that has
// been idle for the idle TTL (WithIdleTTL) with its bucket full again is
// dropped at no cost, since a new bucket for it would be just as full.
type Limiter struct {
	perSec  float64 // tokens per second; 0 means no limit
	burst   int
	idleTTL int64 // nanoseconds
	now     func() time.Time
	epoch   time.Time // bucket times are int64 nanoseconds since epoch
	seed    maphash.Seed
	digestA maphash.Seed
	digestB maphash.Seed
	shards  []shard

	rejected atomic.Uint64
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
	lim        *rate.Limiter
	prev, next *bucket
	lastUsed   int64 // nanoseconds since Limiter.epoch
	fullAt     int64 // when the bucket is full again, if nobody takes a token
}

// Decision is the outcome of one Take.
type Decision struct {
	// Allowed is true when the caller may proceed, after sleeping Wait.
	Allowed bool
	// Wait is how long an allowed caller must sleep before going on; its
	// token is reserved. Zero when a token was available at once.
	Wait time.Duration
	// RetryAfter is, for a caller that was not allowed, the time until a
	// token will be free. Zero when Allowed.
	RetryAfter time.Duration
	// Remaining is the whole tokens left in the bucket after this Take.
	Remaining int
	// Reset is the time until the bucket is full again if nobody takes a
	// token meanwhile.
	Reset time.Duration
}

// NewLimiter returns a Limiter of rate with bursts of burst tokens per key.
// A zero (or non-positive) rate means no limit: every Take is allowed and
// no key is tracked. burst is the resolved config's (at least 1: the
// config applies its default, rate.N, once).
func NewLimiter(r config.Rate, burst int, opts ...Option) *Limiter {
	o := buildOptions(opts)
	l := &Limiter{
		perSec:  r.PerSecond(),
		burst:   burst,
		idleTTL: int64(o.idleTTL),
		now:     o.clock,
		seed:    maphash.MakeSeed(),
		digestA: maphash.MakeSeed(),
		digestB: maphash.MakeSeed(),
	}
	l.epoch = l.now()
	n := 1
	if o.maxKeys >= shardCount*minKeysPerShard {
		n = shardCount
	}
	l.shards = make([]shard, n)
	for i := range l.shards {
		// Per-shard caps round down, so the total never exceeds maxKeys.
		l.shards[i].max = o.maxKeys / n
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// Take spends one token of key's bucket. If a token is available now, the
// caller is Allowed at once. If one becomes available within maxWait, the
// caller is Allowed with Wait set to how long it must sleep first; the token
// is reserved for it, so it must not ask again. Otherwise it is not allowed,
// nothing is spent, and RetryAfter says when a token would be free.
// maxWait <= 0 means reject at once. key "" is a bucket like any other
// (the proxy uses it for key: none).
//
// An allowed caller that ends up not waiting (its client left) does not
// give its token back: a client that keeps leaving should not get more.
func (l *Limiter) Take(key string, maxWait time.Duration) Decision {
	if l.perSec <= 0 {
		return Decision{Allowed: true, Remaining: l.burst}
	}
	key = l.boundedKey(key)
	now := l.now()
	t := int64(now.Sub(l.epoch))
	sh := l.shardFor(key)

	sh.mu.Lock()
	b := sh.buckets[key]
	if b == nil {
		b = sh.add(key, rate.NewLimiter(rate.Limit(l.perSec), l.burst))
	} else {
		sh.toFront(b)
	}
	d := l.spend(b.lim, now, maxWait)
	b.lastUsed = t
	b.fullAt = t + int64(d.Reset)
	sh.sweep(t, l.idleTTL)
	sh.mu.Unlock()

	if !d.Allowed {
		l.rejected.Add(1)
	}
	return d
}

// spend takes the token for Take. The shard lock is held, so nobody else
// touches lim between the calls below: TokensAt tells exactly what AllowN
// or ReserveN will find.
func (l *Limiter) spend(lim *rate.Limiter, now time.Time, maxWait time.Duration) Decision {
	var d Decision
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		lim.AllowN(now, 1)
		tokens--
		d.Allowed = true
	} else if wait := l.durationFor(1 - tokens); wait <= maxWait {
		// ReserveN allocates the Reservation; only waiting callers pay it.
		d.Wait = lim.ReserveN(now, 1).DelayFrom(now)
		tokens--
		d.Allowed = true
	} else {
		d.RetryAfter = wait
	}
	if tokens >= 1 {
		d.Remaining = int(tokens)
	}
	d.Reset = l.durationFor(float64(l.burst) - tokens)
	return d
}

// durationFor is how long the bucket takes to gain n tokens, rounded up so
// that a caller who sleeps that long finds them.
func (l *Limiter) durationFor(n float64) time.Duration {
	if n <= 0 {
		return 0
	}
	ns := math.Ceil(n / l.perSec * float64(time.Second))
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

func (l *Limiter) boundedKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	var d [16]byte
	binary.LittleEndian.PutUint64(d[:8], maphash.String(l.digestA, key))
	binary.LittleEndian.PutUint64(d[8:], maphash.String(l.digestB, key))
	return string(d[:])
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

// add tracks a new key at the head, first forgetting the least recently used
// key if the shard is full.
func (sh *shard) add(key string, lim *rate.Limiter) *bucket {
	if len(sh.buckets) >= sh.max && sh.tail != nil {
		sh.remove(sh.tail)
	}
	// Clone: key may be a slice of a much larger string (a request line, a
	// header block) that the map must not keep alive.
	b := &bucket{key: strings.Clone(key), lim: lim}
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
