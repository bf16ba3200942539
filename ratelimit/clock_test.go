package ratelimit

import (
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// fakeClock is a clock that moves only when told to; its timers fire as it does.
type fakeClock = testkit.Clock

func newFakeClock() *fakeClock { return testkit.NewClock() }

// realQuota is a Quota over a local bucket on the real clock.
func realQuota(cfg config.Quota) *Quota { return NewQuota(cfg, NewBucket(cfg), nil) }

// fakeQuota is a Quota over a local bucket on clock.
func fakeQuota(cfg config.Quota, clock *fakeClock) *Quota {
	return newQuota(cfg, NewBucket(cfg), nil, clock)
}

// near reports whether got is within margin of want.
func near(got, want, margin time.Duration) bool {
	return got >= want-margin && got <= want+margin
}
