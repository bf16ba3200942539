package clients

import "sync"

// Concurrency counts each client's requests in flight, to hold them to
// their tier's max_concurrent. Only clients with a request in flight have
// an entry, and only identified clients get here, so it never holds more
// than the keys file names. The zero value is not usable; call
// NewConcurrency.
type Concurrency struct {
	mu sync.Mutex
	n  map[string]int
}

// NewConcurrency returns an empty Concurrency.
func NewConcurrency() *Concurrency { return &Concurrency{n: map[string]int{}} }

// Acquire takes a slot for id if it holds fewer than max; max <= 0 means
// no cap.
func (c *Concurrency) Acquire(id string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && c.n[id] >= max {
		return false
	}
	c.n[id]++
	return true
}

// Release gives back a slot Acquire took.
func (c *Concurrency) Release(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id] <= 1 {
		delete(c.n, id)
		return
	}
	c.n[id]--
}

// InFlight is every client's requests in flight, together.
func (c *Concurrency) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, v := range c.n {
		total += v
	}
	return total
}
