// Package cache keeps upstream responses for a route and coalesces
// concurrent misses, as SPEC.md's "cache" key and "Cache misses coalesce"
// describe. It imports only the standard library: the proxy turns a route's
// config.Cache into a Policy and a Memory store, and owns metrics and logs.
//
// The pieces, each in its own file:
//
//   - Entry (entry.go): one stored response. Entries are immutable once
//     stored and are shared, not copied, on a hit.
//   - Store, Memory (memory.go): where entries live; Memory is an LRU
//     bounded by bytes.
//   - Policy, Rules, RequestRules, Storable (policy.go): the cache key and
//     what may be looked up, stored, and served as fresh or stale.
//   - Capture (capture.go): tee a response body into an entry
//     while it streams to the client.
//   - Group, Flight (group.go): one upstream request per key while the entry
//     is missing or expired; the others share its response.
//
// # How the proxy uses it
//
// One Policy, one Store and one Group per route (a route's cache survives a
// reload when its settings are unchanged). For each request r:
//
//	lookup, store := policy.Rules(r)
//	key := policy.Key(route, caller, r) // caller: "" or policy.Caller(client id)
//	var entry *cache.Entry // kept for stale-if-error
//	if lookup {
//		entry, _ = st.Get(key)
//		if policy.Freshness(entry, now) == cache.Fresh {
//			serve entry // hit
//			return
//		}
//	}
//	if !lookup || !store {
//		proxy alone; if store, capture and st.Set as below without a flight
//		return
//	}
//	flight, shared, ok := group.Join(ctx, key) // ctx bounded by the route timeout
//	switch {
//	case ok:
//		serve shared // coalesced: the leader's response, fresh from upstream
//	case flight == nil:
//		proxy alone (bound reached, ctx ended, or the leader had nothing to share)
//	default: // leader
//		defer flight.Done(nil) // releases waiters on every path, panics included
//		in ModifyResponse:
//			if !policy.Storable(resp) { flight.Done(nil); return }
//			status, header := resp.StatusCode, resp.Header.Clone() // hop-by-hop already gone
//			answered := time.Now()
//			resp.Body = cache.Capture(resp.Body, policy.MaxEntrySize,
//				func(body []byte) {
//					e := &cache.Entry{Status: status, Header: header, Body: body, Stored: answered}
//					st.Set(key, e) // first Set, then Done: see Flight.Done
//					flight.Done(e)
//				},
//				func() { flight.Done(nil) })
//	}
//
// The leader streams to its own client exactly as an uncached request would:
// Join returns at once for it, and Flight.Done never blocks, so the leader's
// client never waits for the waiters. Waiters are released as soon as the
// leader knows the outcome: at response headers when the response cannot be
// shared, at the body's EOF when it can (before the leader's client has been
// sent the last bytes), or when the capture is abandoned.
//
// A hit or a shared entry is served with Entry.CopyHeader, Status and Body,
// and never modified. A HEAD is answered from a GET's entry without the body.
//
// Group.Do wraps Join and Done for a caller whose whole upstream exchange
// fits in one function; a streaming proxy is better served by Join, since Do
// can release the waiters only when that function returns.
package cache
