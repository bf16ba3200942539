package cache

import (
	"net/http"
	"time"
)

// entryOverhead approximates what an entry costs beyond its body and header
// bytes: the Entry struct, the header map, and a store's bookkeeping (map
// slot, LRU element). It keeps a flood of tiny entries from looking free.
const entryOverhead = 128

// Entry is one stored response.
//
// An Entry is immutable once it has been handed to a Store or to Flight.Done:
// a hit returns the stored pointer itself, shared by every reader, so that a
// hit costs no copying. Nobody may change its fields, its Header map, the
// header value slices or the Body bytes afterwards; use CopyHeader to put the
// header on a response.
type Entry struct {
	// Status is the upstream's status code.
	Status int
	// Header is the response header, already stripped of hop-by-hop
	// headers by the caller, and owned by the entry (build it with
	// resp.Header.Clone()). Nil means no header fields.
	Header http.Header
	// Body is the whole response body; nil means empty.
	Body []byte
	// Stored is when the upstream answered; the zero time makes the entry
	// very old, so it is never fresh.
	Stored time.Time
}

// Size is the approximate number of bytes the entry holds in memory: the
// body, each header field as it would appear on the wire ("Name: value\r\n"),
// and a fixed overhead. A store adds the length of the key. A nil entry has
// size 0.
func (e *Entry) Size() int64 {
	if e == nil {
		return 0
	}
	n := int64(len(e.Body)) + entryOverhead
	for name, values := range e.Header {
		for _, v := range values {
			n += int64(len(name) + len(": ") + len(v) + len("\r\n"))
		}
	}
	return n
}

// Age is how long ago the upstream answered, as of now; never negative (a
// Stored time in the future, from a clock step, counts as age 0).
func (e *Entry) Age(now time.Time) time.Duration {
	if age := now.Sub(e.Stored); age > 0 {
		return age
	}
	return 0
}

// CopyHeader sets every field of the entry's header on dst, replacing what
// dst had for those names; other fields of dst are left alone. The value
// slices are shared with the entry, not copied, but with their capacity
// clipped: a later dst.Add appends to a fresh array instead of writing into
// the entry's (which other readers are using concurrently). Callers may
// replace dst's values (Set, Del) but must not assign into them in place.
func (e *Entry) CopyHeader(dst http.Header) {
	for name, values := range e.Header {
		dst[name] = values[:len(values):len(values)]
	}
}
