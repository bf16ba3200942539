package testkit

import (
	"sort"
	"sync"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/clock"
)

// Clock is a clock.Clock that moves only when told to (Advance), firing
// the timers that fall due; Timers says how many are pending, so that a
// test can tell when its goroutines are waiting.
type Clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTimer
}

var _ clock.Clock = (*Clock)(nil)

// NewClock returns a Clock at a fixed time.
func NewClock() *Clock { return &Clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// NewTimer returns a timer that fires when the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timerAt(c.t.Add(d))
}

// NewTimerAt returns a timer that fires when the clock reaches t.
func (c *Clock) NewTimerAt(t time.Time) clock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timerAt(t)
}

// timerAt is a timer for at, fired now if at has come. c.mu is held.
func (c *Clock) timerAt(at time.Time) *fakeTimer {
	ft := &fakeTimer{c: c, at: at, ch: make(chan time.Time, 1)}
	if !at.After(c.t) {
		ft.ch <- c.t
		return ft
	}
	c.timers = append(c.timers, ft)
	return ft
}

// Advance moves the clock d on, firing the timers due by then in order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	for len(c.timers) > 0 && !c.timers[0].at.After(c.t) {
		ft := c.timers[0]
		c.timers = c.timers[1:]
		ft.ch <- c.t
	}
}

// Timers is how many timers are pending.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type fakeTimer struct {
	c  *Clock
	at time.Time
	ch chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}
