package policy

import (
	"strconv"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/breakwater-proxy/breakwater/config"
)

// State is a breaker state as breakwater reports it.
type State string

// Breaker states. HalfOpenDue is failsafe-go's lazy transition made
// visible: the delay has passed, so the next request will be a probe, but
// no request has asked yet (failsafe-go issue #97), so the library still
// says open.
const (
	Closed      State = "closed"
	Open        State = "open"
	HalfOpen    State = "half-open"
	HalfOpenDue State = "half-open due"
)

// Breaker is a named circuit breaker, scoped to a route or shared by an
// upstream's routes.
type Breaker struct {
	Name  string
	Scope string // "route" or "upstream"
	cb    circuitbreaker.CircuitBreaker[any]
	on    conditions
	delay time.Duration

	// Half-open probes are counted here, not by failsafe-go (see acquire).
	probes   int        // probes in flight allowed while half-open
	mu       sync.Mutex // guards what follows
	halfOpen bool       // failsafe's state, as its listener last reported it
	free     int        // probe permits left
	period   uint64     // counts transitions: a permit from an earlier period is not given back
}

// NewBreaker builds a breaker from a resolved config block. Both thresholds
// are always set: failsafe-go's defaults open on one failure and, without a
// success threshold, close on one success.
func NewBreaker(name, scope string, c *config.CircuitBreaker, obs Observer) *Breaker {
	brk := &Breaker{Name: name, Scope: scope, on: parseConditions(c.On), delay: c.Delay.D(),
		probes: max(c.HalfOpenRequests, c.SuccessThreshold)}
	b := circuitbreaker.NewBuilder[any]().
		WithDelay(c.Delay.D()).
		WithSuccessThresholdRatio(uint(c.SuccessThreshold), uint(brk.probes))
	if c.FailureThreshold > 0 {
		b = b.WithFailureThreshold(uint(c.FailureThreshold))
	} else {
		b = b.WithFailureRateThreshold(float64(c.FailureRate), uint(c.MinRequests), c.Window.D())
	}
	b = b.OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
		brk.changed(e.NewState)
		obs.BreakerChanged(name, stateOf(e.OldState), stateOf(e.NewState))
	})
	brk.cb = b.Build()
	return brk
}

func stateOf(s circuitbreaker.State) State {
	switch s {
	case circuitbreaker.OpenState:
		return Open
	case circuitbreaker.HalfOpenState:
		return HalfOpen
	}
	return Closed
}

// BreakerStatus is a snapshot for /breakers, /health and metrics.
type BreakerStatus struct {
	Name        string  `json:"name"`
	Scope       string  `json:"scope"`
	State       State   `json:"state"`
	Failures    uint    `json:"failures"`
	Successes   uint    `json:"successes"`
	FailureRate float64 `json:"failure_rate"` // 0..1 in the current window
	RetryIn     float64 `json:"retry_in_seconds"`
}

// Status reports the breaker's state honestly: an open breaker whose delay
// has passed is "half-open due".
func (b *Breaker) Status() BreakerStatus {
	st := stateOf(b.cb.State())
	rem := b.cb.RemainingDelay()
	if st == Open && rem <= 0 {
		st = HalfOpenDue
	}
	m := b.cb.Metrics()
	return BreakerStatus{
		Name: b.Name, Scope: b.Scope, State: st,
		Failures: m.Failures(), Successes: m.Successes(),
		FailureRate: m.FailureRate(),
		RetryIn:     rem.Seconds(),
	}
}

// State is the breaker's reported state.
func (b *Breaker) State() State { return b.Status().State }

// Force sets the state by hand (maintenance, tests).
func (b *Breaker) Force(s State) bool {
	switch s {
	case Open:
		b.cb.Open()
	case Closed:
		b.cb.Close()
	case HalfOpen:
		b.cb.HalfOpen()
	default:
		return false
	}
	return true
}

// openFor reports whether the breaker is open with its delay still running,
// and how long is left: checked before waiting for quota, so that an open
// breaker neither queues callers nor spends tokens.
func (b *Breaker) openFor() (time.Duration, bool) {
	if !b.cb.IsOpen() {
		return 0, false
	}
	rem := b.cb.RemainingDelay()
	return rem, rem > 0
}

// permit is what acquire hands out; a half-open probe's names the period
// it was taken in.
type permit struct {
	probe  bool
	period uint64
	// breaker and waited are what the attempt went through, for its
	// trace: the state that admitted it ("" = no breaker), its quota wait.
	breaker State
	waited  time.Duration
}

// acquire takes a permit for one attempt; a probe's must be given back
// by record, whatever the attempt's verdict.
//
// Why breakwater counts half-open probes itself: failsafe-go's half-open
// state hands out a fixed number of permits (the success threshold's
// capacity, max(half_open_requests, success_threshold) here) in
// TryAcquirePermit and takes one back only in RecordSuccess or
// RecordFailure; it has no way to release a permit without a result
// (v0.9.8, circuitbreaker/circuitstates.go). A probe whose client gave up
// is nobody's result (FAILSAFE_NOTES: a cancelled client is not a breaker
// failure) — recording it as a success closed the breaker on a dead
// upstream (issue 11), and recording nothing would lose the permit until
// every probe was stuck out. So while half-open, failsafe-go's permits
// are not asked for: our own count of the same size is, and a cancelled
// probe gives its permit back there. failsafe-go still decides every
// transition, from the results recorded; its listener (changed) tells us
// when a half-open period starts or ends.
func (b *Breaker) acquire() (permit, bool) {
	if p, halfOpen, ok := b.takeProbe(); halfOpen {
		return p, ok
	}
	// Closed, or open: failsafe-go decides, and moves an open breaker
	// whose delay has passed to half-open (its listener then fills our
	// probe permits, before TryAcquirePermit returns).
	if !b.cb.TryAcquirePermit() {
		return permit{}, false
	}
	if p, halfOpen, ok := b.takeProbe(); halfOpen {
		return p, ok
	}
	return permit{}, true
}

// takeProbe takes a probe permit while half-open.
func (b *Breaker) takeProbe() (p permit, halfOpen, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.halfOpen {
		return permit{}, false, false
	}
	if b.free <= 0 {
		return permit{}, true, false
	}
	b.free--
	return permit{probe: true, period: b.period}, true, true
}

// changed follows failsafe-go's transitions: each one starts a period,
// and a half-open one starts with every probe permit free.
func (b *Breaker) changed(to circuitbreaker.State) {
	b.mu.Lock()
	b.period++
	b.halfOpen = to == circuitbreaker.HalfOpenState
	b.free = b.probes
	b.mu.Unlock()
}

// verdict is how one attempt counts for a breaker.
type verdict int

const (
	neutral verdict = iota // client cancellation, rejection: not the upstream's fault
	success
	failure
)

// record counts an attempt and gives a probe's permit back. A neutral
// outcome is not recorded at all. The result goes to failsafe-go first:
// if it ends the half-open period, the permit belongs to a period that
// is over and is not given back.
func (b *Breaker) record(v verdict, p permit) {
	switch v {
	case failure:
		b.cb.RecordFailure()
	case success:
		b.cb.RecordSuccess()
	}
	if p.probe {
		b.mu.Lock()
		if p.period == b.period {
			b.free++
		}
		b.mu.Unlock()
	}
}

// conditions is a parsed retry.on / circuit_breaker.on list.
type conditions struct {
	connectError, timeout bool
	classes               [6]bool // by status/100
	codes                 map[int]bool
}

func parseConditions(on []string) conditions {
	var c conditions
	for _, s := range on {
		switch s {
		case "connect_error":
			c.connectError = true
		case "timeout":
			c.timeout = true
		case "4xx":
			c.classes[4] = true
		case "5xx":
			c.classes[5] = true
		default:
			if n, err := strconv.Atoi(s); err == nil {
				if c.codes == nil {
					c.codes = map[int]bool{}
				}
				c.codes[n] = true
			}
		}
	}
	return c
}

func (c conditions) status(code int) bool {
	if code/100 < len(c.classes) && c.classes[code/100] {
		return true
	}
	return c.codes[code]
}
