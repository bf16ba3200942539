package ratelimit

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter caps what ParseRetryAfter returns. Callers cap far lower
// (quota.max_pause, retry_after.max); this only keeps a silly value such as
// 99999999999999999999 from overflowing a time.Duration.
const maxRetryAfter = 365 * 24 * time.Hour

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3):
// delta-seconds, or an HTTP-date taken relative to now. Leniently, it also
// accepts surrounding spaces and a fractional number of seconds ("1.5"),
// which some APIs send. A date in the past means 0 (ok). ok is false for an
// absent, negative or unparseable value, and the duration is then 0; it is
// never negative, and at most a year.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' || v[0] == '.' {
		return parseSeconds(v)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now) // saturates rather than overflowing
	return min(max(d, 0), maxRetryAfter), true
}

// parseSeconds accepts DIGITS, DIGITS.DIGITS, DIGITS. and .DIGITS, nothing
// else: no sign, exponent, hex, underscores, "Inf" or "NaN", all of which
// strconv.ParseFloat would take.
func parseSeconds(v string) (time.Duration, bool) {
	digits, dot := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) { // a range error is a huge value: cap it
		return 0, false
	}
	if s >= maxRetryAfter.Seconds() || math.IsInf(s, 0) {
		return maxRetryAfter, true
	}
	// Round up to the nanosecond: waiting a hair longer than asked is safe.
	return time.Duration(math.Ceil(s * float64(time.Second))), true
}
