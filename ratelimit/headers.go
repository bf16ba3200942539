package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// SetHeaders writes the IETF httpapi RateLimit draft headers for one Take
// of a route limited by policy with bursts of burst (the resolved
// config's, at least 1), on allowed and on limited responses alike:
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
	q, w := policy.N, ceilSeconds(policy.Period)
	w = max(w, 1)
	if policy.Period != time.Duration(w)*time.Second {
		q = max(int(math.Floor(perSec*float64(w))), 1)
	}
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

	// This runs on every request of a limited route, so both values are
	// built in one stack buffer and share one backing array: three
	// allocations (two strings and the array) rather than nine.
	var scratch [128]byte
	b := appendSFString(scratch[:0], name)
	nameEnd := len(b)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, int64(q), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, w, 10)
	policyValue := string(b)
	b = append(b[:nameEnd], ";r="...)
	b = strconv.AppendInt(b, int64(max(d.Remaining, 0)), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, max(ceilSeconds(t), 0), 10)
	values := []string{policyValue, string(b), ""}
	// The canonical forms of RateLimit-Policy and RateLimit, as Set would
	// store them; the capacities are clipped so that an Add cannot write
	// into a neighbour.
	h["Ratelimit-Policy"] = values[0:1:1]
	h["Ratelimit"] = values[1:2:2]
	if !d.Allowed {
		values[2] = strconv.FormatInt(RetryAfterSeconds(d.RetryAfter), 10)
		h["Retry-After"] = values[2:3:3]
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

// appendSFString appends s to b as a structured-field string (RFC 9651
// §3.3.3): quoted, with " and \ escaped. Characters a string cannot hold
// (controls, non-ASCII) become '?', so that a route name can never break
// the header.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
