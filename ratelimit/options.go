package ratelimit

import "time"

// Option tunes a Limiter or a Quota. Options that do not apply to one of
// them are ignored by it, and so is a nil Option.
type Option func(*options)

type options struct {
	clock func() time.Time

	queueWaiting func(prio, delta int)
	queueWaited  func(prio int, d time.Duration)
}

func buildOptions(opts []Option) options {
	o := options{clock: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
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
