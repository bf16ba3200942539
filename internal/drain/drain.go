// Package drain discards response bodies that breakwater will not forward:
// the body of an attempt that is retried, hedged away or answered with 401.
// SPEC Part 3, "Every step under the route's clock": such a body is read for
// at most MaxTime or MaxBytes, so that a short one leaves its connection
// reusable, then closed; a stalled one never delays the answer.
package drain

import (
	"io"
	"net/http"
	"time"
)

const (
	// MaxBytes is the most of a discarded body that is read.
	MaxBytes = 64 << 10
	// MaxTime is the longest a discarded body is read for.
	MaxTime = 100 * time.Millisecond
)

// Discard drains rc in the background, bounded by MaxTime and MaxBytes,
// then closes it. It never blocks its caller; rc must not be used after.
// Closing rc ends a read that is blocked on a stalled peer, so the
// goroutine lives at most MaxTime.
func Discard(rc io.ReadCloser) {
	if rc == nil || rc == http.NoBody {
		return
	}
	go func() {
		t := time.AfterFunc(MaxTime, func() { _ = rc.Close() })
		_, _ = io.CopyN(io.Discard, rc, MaxBytes)
		t.Stop()
		_ = rc.Close()
	}()
}
