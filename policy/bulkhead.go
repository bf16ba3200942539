package policy

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"

	"github.com/breakwater-proxy/breakwater/config"
)

// Bulkhead caps a route's concurrent requests. A slot is held until the
// response body is finished or the client leaves, not just until headers
// arrive (failsafe's HTTP helpers release it at headers).
type Bulkhead struct {
	bh       bulkhead.Bulkhead[any]
	max      int
	maxWait  time.Duration
	inFlight atomic.Int64
}

// NewBulkhead builds a bulkhead from a resolved config block.
func NewBulkhead(c *config.Bulkhead) *Bulkhead {
	return &Bulkhead{bh: bulkhead.New[any](uint(c.MaxConcurrent)), max: c.MaxConcurrent, maxWait: c.MaxWait.D()}
}

// InFlight is the number of slots taken (failsafe-go does not expose it).
func (b *Bulkhead) InFlight() int { return int(b.inFlight.Load()) }

// Max is the number of slots.
func (b *Bulkhead) Max() int { return b.max }

func (b *Bulkhead) acquire(ctx context.Context) error {
	if b.maxWait <= 0 {
		if !b.bh.TryAcquirePermit() {
			return &RejectedError{Err: ErrBulkheadFull}
		}
	} else {
		wait := b.maxWait
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if err := b.bh.AcquirePermitWithMaxWait(ctx, wait); err != nil {
			if errors.Is(err, bulkhead.ErrFull) {
				return &RejectedError{Err: ErrBulkheadFull}
			}
			return err
		}
	}
	b.inFlight.Add(1)
	return nil
}

func (b *Bulkhead) release() {
	b.inFlight.Add(-1)
	b.bh.ReleasePermit()
}
