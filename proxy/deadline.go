package proxy

import "time"

// idleDeadline is a connection deadline that a client must keep pushing
// forward by making progress: body_idle_timeout on reads of its request
// body, stream_idle_timeout on writes of its response.
//
// The deadline moves at most every idle/4, so steady traffic costs few
// deadline updates (each one takes the poller's lock), and it is set
// idle + idle/4 ahead, so that nothing is cut before a full idle period
// without progress.
type idleDeadline struct {
	idle    time.Duration // 0 = no deadline
	armedAt time.Time
}

// next reports the deadline to set before the next read or write, and
// whether one needs setting now.
func (d *idleDeadline) next() (time.Time, bool) {
	if d.idle <= 0 {
		return time.Time{}, false
	}
	now := time.Now()
	if !d.armedAt.IsZero() && now.Sub(d.armedAt) < d.idle/4 {
		return time.Time{}, false
	}
	d.armedAt = now
	return now.Add(d.idle + d.idle/4), true
}

// armed reports whether a deadline was ever set.
func (d *idleDeadline) armed() bool { return !d.armedAt.IsZero() }
