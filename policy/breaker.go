package policy

import (
	"strconv"
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
}

// NewBreaker builds a breaker from a resolved config block. Both thresholds
// are always set: failsafe-go's defaults open on one failure and, without a
// success threshold, close on one success.
func NewBreaker(name, scope string, c *config.CircuitBreaker, obs Observer) *Breaker {
	b := circuitbreaker.NewBuilder[any]().
		WithDelay(c.Delay.D()).
		WithSuccessThresholdRatio(uint(c.SuccessThreshold), uint(max(c.HalfOpenRequests, c.SuccessThreshold)))
	if c.FailureThreshold > 0 {
		b = b.WithFailureThreshold(uint(c.FailureThreshold))
	} else {
		b = b.WithFailureRateThreshold(float64(c.FailureRate), uint(c.MinRequests), c.Window.D())
	}
	b = b.OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
		obs.BreakerChanged(name, stateOf(e.OldState), stateOf(e.NewState))
	})
	return &Breaker{Name: name, Scope: scope, cb: b.Build(), on: parseConditions(c.On), delay: c.Delay.D()}
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

// acquire takes a permit. probe reports a half-open probe, whose permit
// must be given back by a record of some kind.
func (b *Breaker) acquire() (probe, ok bool) {
	if !b.cb.TryAcquirePermit() {
		return false, false
	}
	return b.cb.IsHalfOpen(), true
}

// verdict is how one attempt counts for a breaker.
type verdict int

const (
	neutral verdict = iota // client cancellation, rejection: not the upstream's fault
	success
	failure
)

// record counts an attempt. A neutral outcome is not recorded, except that
// a half-open probe's permit must be returned, and failsafe-go returns it
// only with a result: such a probe counts as a success, because the
// upstream did not fail it.
func (b *Breaker) record(v verdict, probe bool) {
	switch {
	case v == failure:
		b.cb.RecordFailure()
	case v == success || probe:
		b.cb.RecordSuccess()
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
