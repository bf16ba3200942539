// Package ending decides, in one place for the whole proxy, why a request
// stopped before its answer: the route's timeout ran out, or the client
// left. The pipeline (its attempts, its queue waits, its final error), the
// upstream token wait (auth.Transport) and the proxy's error mapping all
// ask Of, so that a request is never a timeout in one and a departed client
// in another.
package ending

import (
	"context"
	"errors"
)

// Reason is why a request's context ended.
type Reason uint8

const (
	// Running: nothing ended.
	Running Reason = iota
	// ClientLeft: the client's own context ended (the client went away, or
	// the proxy gave up on its body). It decides over everything else: a
	// client that left is owed no answer, and no upstream is blamed.
	ClientLeft
	// Timeout: the route's clock ran out while the client was still there.
	Timeout
	// Ended: the request's owner ended it for a reason of its own (a
	// finished request, an idle stream); nobody's failure.
	Ended
)

// ErrTimeout is the cause a request's context is cancelled with when the
// route's timeout passes (policy.ErrTimeout is this error).
var ErrTimeout = errors.New("route timeout")

// Of says why a request stopped. cause is what stopped it: the cause of
// the request's context (context.Cause), or an error that reports one;
// nil when nothing did. client is the client's own context, from which
// the request's derives.
//
// The route's clock is ErrTimeout, a context deadline, or a bare
// context.Canceled while the client is still there: failsafe reports a
// context that ended during an attempt or a backoff that way, dropping its
// cause, and the only other ends of a request's context carry causes of
// their own.
func Of(cause error, client context.Context) Reason {
	switch {
	case client.Err() != nil:
		return ClientLeft
	case cause == nil:
		return Running
	case errors.Is(cause, ErrTimeout), errors.Is(cause, context.DeadlineExceeded), errors.Is(cause, context.Canceled):
		return Timeout
	}
	return Ended
}
