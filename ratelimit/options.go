package ratelimit

import "time"

// DefaultMaxKeys is how many keys a Limiter tracks when WithMaxKeys is not given.
const DefaultMaxKeys = 100_000

// DefaultIdleTTL is how long a Limiter keeps a key nobody uses, once its
// bucket is full again, when WithIdleTTL is not given.
const DefaultIdleTTL = time.Minute

// Option tunes a Limiter or a Quota. Options that do not apply to one of
// them are ignored by it, and so is a nil Option.
type Option func(*options)

type options struct {
	maxKeys int
	idleTTL time.Duration
	clock   func() time.Time

	queueWaiting func(prio, delta int)
	queueWaited  func(prio int, d time.Duration)
}

func buildOptions(opts []Option) options {
	o := options{maxKeys: DefaultMaxKeys, idleTTL: DefaultIdleTTL, clock: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// WithMaxKeys caps how many keys a Limiter tracks; n <= 0 means
// DefaultMaxKeys. When the cap is reached the least recently used key is
// forgotten. Quota ignores it.
func WithMaxKeys(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxKeys = n
		}
	}
}

// WithIdleTTL sets how long a Limiter keeps a key that nobody uses. Such a
// key is forgotten only once its bucket has refilled completely too, so that
// forgetting it never hands a client tokens it would not have had anyway.
// d <= 0 means DefaultIdleTTL. Quota ignores it.
func WithIdleTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.idleTTL = d
		}
	}
}

// WithClock replaces time.Now, for tests; nil means time.Now. A Quota only
// reads the time from it: its waits still sleep on real timers for the
// duration the clock implies.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.clock = now
		}
	}
}

// WithQueueObserver reports a Quota's waiters: waiting(prio, 1) when a
// caller starts sleeping for its token and waiting(prio, -1) when it
// stops, and waited(prio, d) with the time it spent, served or not. Only
// callers that sleep are reported. Either may be nil; Limiter ignores it.
func WithQueueObserver(waiting func(prio, delta int), waited func(prio int, d time.Duration)) Option {
	return func(o *options) {
		o.queueWaiting, o.queueWaited = waiting, waited
	}
}
