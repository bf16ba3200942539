package config

import "reflect"

// queueDefaults fill the keys of an upstream's concurrency block that it
// does not set (route bulkheads take theirs from blockDefaults).
const queueDefaults = `
max_queue: 1000   # a waiter is a parked goroutine: cheap, but a stalled upstream must not pile them up for ever
max_wait: 0s      # 0s: with every slot taken, shed load at once unless the file asks callers to wait
`

// concurrencyDefaults fills an upstream's concurrency block; `off` is no block.
func concurrencyDefaults(u *Upstream) {
	if u.Concurrency == nil {
		return
	}
	if u.Concurrency.Off {
		u.Concurrency = nil
		return
	}
	var d Bulkhead
	mustDecode(queueDefaults, &d)
	inherit(reflect.ValueOf(u.Concurrency).Elem(), reflect.ValueOf(&d).Elem())
}

// resolvePriority fills the route's priority along its inheritance chain.
func resolvePriority(e *Effective, chain []*Policies) {
	e.Priority = "normal" // every route equal, as before Part 2
	if v := firstSet(chain, func(p *Policies) *string { return p.Priority }); *v != "" {
		e.Priority = *v
	}
}

// queuePolicies checks the queue keys of a policy block.
func (v *validator) queuePolicies(path string, p *Policies) {
	if pr := p.Priority; pr != nil {
		switch *pr {
		case "high", "normal", "low":
		default:
			v.errorf(path+".priority", "want high, normal or low, got %q", *pr)
		}
	}
	if b := p.Bulkhead; b != nil && !b.Off {
		v.queue(path+".bulkhead", b)
	}
}

// concurrency checks an upstream's concurrency block.
func (v *validator) concurrency(path string, u *Upstream) {
	c := u.Concurrency
	if c == nil || c.Off {
		return
	}
	cp := path + ".concurrency"
	if c.MaxConcurrent < 1 {
		v.errorf(cp+".max_concurrent", "must be at least 1")
	}
	v.queue(cp, c)
}

// queue checks the waiting keys of a bulkhead or concurrency block.
func (v *validator) queue(path string, b *Bulkhead) {
	if b.IsSet("max_queue") && b.MaxQueue < 0 {
		v.errorf(path+".max_queue", "must not be negative (0 = nobody waits)")
	}
	if b.IsSet("max_queue") && b.MaxQueue == 0 && b.IsSet("max_wait") && b.MaxWait > 0 {
		v.warnf(path+".max_queue", "max_queue: 0 lets nobody wait, so max_wait %s never applies", b.MaxWait)
	}
}
