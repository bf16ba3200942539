package ratelimit

import (
	"net/http"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// The Bar on the limiter itself: [3/2s, 5/1h]: 3 pass, the 4th is
// refused by the 2 s window; 2 s later two more pass, then the 1 h window
// refuses. A refusal spends from no window.
func TestWindowsAllMustAdmit(t *testing.T) {
	clock := newFakeClock()
	ws := config.WindowsOf([]config.Rate{{N: 3, Period: 2 * time.Second}, {N: 5, Period: time.Hour}})
	l := newLimiter(ws, clock.Now, DefaultMaxKeys, DefaultIdleTTL)
	take := func() (Decision, http.Header) {
		d := l.Take("acme", 0)
		h := http.Header{}
		SetWindowsHeaders(h, "free", ws, d)
		return d, h
	}
	for i := range 3 {
		d, h := take()
		if !d.Allowed {
			t.Fatalf("take %d refused: %+v", i, d)
		}
		if got, want := h.Get("RateLimit-Policy"), `"free/2s";q=3;w=2, "free/1h";q=5;w=3600`; got != want {
			t.Fatalf("RateLimit-Policy = %q, want %q", got, want)
		}
		if i == 0 {
			if got, want := h.Get("RateLimit"), `"free/2s";r=2;t=1, "free/1h";r=4;t=720`; got != want {
				t.Errorf("RateLimit = %q, want %q", got, want)
			}
		}
	}
	d, h := take()
	if d.Allowed || d.Window != 0 {
		t.Fatalf("4th: %+v, want refused by window 0 (2s)", d)
	}
	if got, want := h.Get("RateLimit"), `"free/2s";r=0;t=1`; got != want {
		t.Errorf("4th RateLimit = %q, want %q", got, want)
	}
	if got := h.Get("Retry-After"); got != "1" {
		t.Errorf("4th Retry-After = %q, want 1", got)
	}
	// Refused takes spent nothing: many of them change no window.
	for range 50 {
		take()
	}
	clock.Advance(2 * time.Second)
	for i := range 2 {
		if d, _ := take(); !d.Allowed {
			t.Fatalf("after 2s, take %d refused: %+v", i, d)
		}
	}
	d, h = take()
	if d.Allowed || d.Window != 1 {
		t.Fatalf("6th: %+v, want refused by window 1 (1h)", d)
	}
	if got := h.Get("RateLimit"); got[:10] != `"free/1h";` {
		t.Errorf("6th RateLimit = %q, want the 1h window", got)
	}
	// One token of 5/1h comes back every 720 s; 2 s of it have passed.
	if got, want := h.Get("Retry-After"), "718"; got != want {
		t.Errorf("6th Retry-After = %q, want %q", got, want)
	}
	if l.RejectedBy(0) != 51 || l.RejectedBy(1) != 1 {
		t.Errorf("RejectedBy = %d, %d; want 51, 1", l.RejectedBy(0), l.RejectedBy(1))
	}
	if other := l.Take("paid", 0); !other.Allowed {
		t.Errorf("another key was refused: %+v", other)
	}
}

// A waiting caller reserves a token in every window, and waits for the
// slowest.
func TestWindowsWaitForTheSlowest(t *testing.T) {
	clock := newFakeClock()
	ws := config.WindowsOf([]config.Rate{{N: 1, Period: time.Second}, {N: 2, Period: 10 * time.Second}})
	l := newLimiter(ws, clock.Now, DefaultMaxKeys, DefaultIdleTTL)
	if d := l.Take("k", 0); !d.Allowed {
		t.Fatal(d)
	}
	d := l.Take("k", 10*time.Second)
	if !d.Allowed || !near(d.Wait, time.Second, time.Millisecond) {
		t.Fatalf("second: %+v, want allowed after 1s", d)
	}
	d = l.Take("k", 10*time.Second)
	if !d.Allowed || !near(d.Wait, 5*time.Second, time.Millisecond) || d.Window != 1 {
		t.Fatalf("third: %+v, want allowed after 5s (the 10s window's next token)", d)
	}
}

func TestWindowName(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2 * time.Second: "t/2s", time.Minute: "t/1m", time.Hour: "t/1h", 90 * time.Second: "t/90s", 1500 * time.Millisecond: "t/1500ms",
	} {
		if got := WindowName("t", d); got != want {
			t.Errorf("WindowName(%v) = %q, want %q", d, got, want)
		}
	}
}
