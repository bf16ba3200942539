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
	q, w := policyNumbers(policy)
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

// SetWindowsHeaders writes the RateLimit draft headers for one Take of a
// limiter over windows ws (config order, as the limiter was made). One
// window is SetHeaders, under name. Several are named name/LENGTH
// ("free/1m", "free/1h") and written as structured-field lists:
//
//	RateLimit-Policy: "free/1m";q=60;w=60, "free/1h";q=1000;w=3600
//	RateLimit: "free/1m";r=59;t=1, "free/1h";r=999;t=4
//
// On an allowed response RateLimit has one item per window. On a refused
// one it has a single item, the window that refused (Decision.Window),
// whose t equals Retry-After: a client reading either header learns which
// window to wait for.
func SetWindowsHeaders(h http.Header, name string, ws []config.Window, d Decision) {
	if len(ws) == 0 {
		return
	}
	if len(ws) == 1 || len(d.Windows) != len(ws) {
		i := min(max(d.Window, 0), len(ws)-1)
		SetHeaders(h, name, ws[i].Rate, ws[i].Burst, d)
		return
	}
	var policy, limit []byte
	for i, w := range ws {
		item := WindowName(name, w.Rate.Period)
		q, wsec := policyNumbers(w.Rate)
		if i > 0 {
			policy = append(policy, ", "...)
		}
		policy = appendSFString(policy, item)
		policy = append(policy, ";q="...)
		policy = strconv.AppendInt(policy, int64(q), 10)
		policy = append(policy, ";w="...)
		policy = strconv.AppendInt(policy, wsec, 10)

		st := d.Windows[i]
		t := st.Reset
		switch {
		case !d.Allowed && i != d.Window:
			continue
		case !d.Allowed:
			t = d.RetryAfter
		case st.Remaining == 0:
			t = st.Wait
		}
		if len(limit) > 0 {
			limit = append(limit, ", "...)
		}
		limit = appendSFString(limit, item)
		limit = append(limit, ";r="...)
		limit = strconv.AppendInt(limit, int64(max(st.Remaining, 0)), 10)
		limit = append(limit, ";t="...)
		limit = strconv.AppendInt(limit, max(ceilSeconds(t), 0), 10)
	}
	h["Ratelimit-Policy"] = []string{string(policy)}
	h["Ratelimit"] = []string{string(limit)}
	if !d.Allowed {
		h["Retry-After"] = []string{strconv.FormatInt(RetryAfterSeconds(d.RetryAfter), 10)}
	}
}

// WindowName names one of several windows: name/LENGTH, the length in
// its largest whole unit (2s, 1m, 1h, 36h; 1500ms when no whole second).
func WindowName(name string, period time.Duration) string {
	return name + "/" + shortDuration(period)
}

func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d >= time.Second && d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

// policyNumbers are a rate's q and w: w whole seconds, at least 1, and q
// scaled to match when the period is not whole seconds.
func policyNumbers(r config.Rate) (q int, w int64) {
	q, w = r.N, max(ceilSeconds(r.Period), 1)
	if r.Period != time.Duration(w)*time.Second {
		q = max(int(math.Floor(r.PerSecond()*float64(w))), 1)
	}
	return q, w
}
