package ratelimit

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{".25", 250 * time.Millisecond, true},
		{"2.", 2 * time.Second, true},
		{" 3 ", 3 * time.Second, true},
		{"\t7\r\n", 7 * time.Second, true},
		{date(2 * time.Second), 2 * time.Second, true},
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second, true},
		{now.Add(5 * time.Second).Format(time.ANSIC), 5 * time.Second, true},
		{date(-time.Hour), 0, true},
		{"99999999999999999999999", maxRetryAfter, true},
		{"1e3", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"   ", 0, false},
		{".", 0, false},
		{"1.2.3", 0, false},
		{"Inf", 0, false},
		{"NaN", 0, false},
		{"0x10", 0, false},
		{"1_000", 0, false},
		{"Wed, 32 Oct 2030 07:28:00 GMT", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tt := range []struct {
		in   time.Duration
		want int64
	}{
		{0, 1}, {-time.Second, 1}, {time.Nanosecond, 1}, {200 * time.Millisecond, 1},
		{time.Second, 1}, {time.Second + time.Nanosecond, 2}, {1500 * time.Millisecond, 2},
		{60 * time.Second, 60},
	} {
		if got := RetryAfterSeconds(tt.in); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, seed := range []string{
		"0", "1", "120", "1.5", " 3 ", "-1", "soon", "", ".", "1e9",
		"99999999999999999999999", "18446744073709551616.5",
		"Wed, 02 Jan 2030 03:04:07 GMT", "Wednesday, 02-Jan-30 03:04:07 GMT",
		"Wed Jan  2 03:04:07 2030", "Mon, 01 Jan 0001 00:00:00 GMT",
		"Fri, 31 Dec 9999 23:59:59 GMT",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if ok && (d < 0 || d > maxRetryAfter) {
			t.Fatalf("ParseRetryAfter(%q) = %v, ok; want 0 ≤ d ≤ %v", v, d, maxRetryAfter)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, not ok; want 0 when not ok", v, d)
		}
	})
}
