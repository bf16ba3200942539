package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// SetHeaders writes the IETF httpapi RateLimit draft headers for one Take
// of a route limited by policy with bursts of burst (burst < 1 means
// policy.N), on allowed and on limited responses alike:
//
//	RateLimit-Policy: "NAME";q=QUOTA;w=WINDOW
//	RateLimit: "NAME";r=REMAINING;t=SECONDS
//
// q and w are the policy's rate as SPEC.md words it (q=RATE): N per Period.
// A Period that is not whole seconds is rounded up to w whole seconds and q
// scaled to match (10/500ms → q=20;w=1), since w must be an integer.
//
// t, in whole seconds rounded up, tells the client when it is worth asking
// again: with tokens left, the time until the bucket is full; with none
// left, the time until the next token (so on a 429 it equals Retry-After).
//
// When d is not Allowed, Retry-After is set too: whole seconds, rounded up,
// at least 1. A zero policy writes nothing.
func SetHeaders(h http.Header, name string, policy config.Rate, burst int, d Decision) {
	perSec := policy.PerSecond()
	if perSec <= 0 {
		return
	}
	if burst < 1 {
		burst = max(policy.N, 1)
	}
	q, w := policy.N, ceilSeconds(policy.Period)
	w = max(w, 1)
	if policy.Period != time.Duration(w)*time.Second {
		q = max(int(math.Floor(perSec*float64(w))), 1)
	}
	sfName := sfString(name)

	var t time.Duration
	switch {
	case !d.Allowed:
		t = d.RetryAfter
	case d.Remaining == 0:
		// Reset is until the bucket holds burst tokens; the next single
		// token comes (burst-1) tokens' worth of time sooner.
		t = d.Reset - time.Duration(float64(burst-1)/perSec*float64(time.Second))
	default:
		t = d.Reset
	}

	h.Set("RateLimit-Policy", sfName+";q="+strconv.Itoa(q)+";w="+strconv.FormatInt(w, 10))
	h.Set("RateLimit", sfName+";r="+strconv.Itoa(max(d.Remaining, 0))+";t="+strconv.FormatInt(max(ceilSeconds(t), 0), 10))
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(RetryAfterSeconds(d.RetryAfter), 10))
	}
}

// RetryAfterSeconds is d as a Retry-After value: whole seconds, rounded up,
// at least 1 (a Retry-After of 0 invites an immediate, equally futile retry).
func RetryAfterSeconds(d time.Duration) int64 {
	return max(ceilSeconds(d), 1)
}

// ceilSeconds is d in whole seconds, rounded up; negative d gives 0 or less.
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second > 0 {
		s++
	}
	return s
}

// sfString renders s as a structured-field string (RFC 9651 §3.3.3):
// quoted, with " and \ escaped. Characters a string cannot hold (controls,
// non-ASCII) become '?', so that a route name can never break the header.
func sfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
