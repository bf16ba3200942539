package admin_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEventsStalledSubscriber: an /events client that stops reading fills
// its connection, then its buffer; after that its events are dropped and
// counted, publishing goes on at full speed and the data plane serves.
// When it reads again it is told how many it missed.
func TestEventsStalledSubscriber(t *testing.T) {
	e := newEnv(t, fmt.Sprintf(echoConfig, "a"))
	// A small receive buffer, so that the connection fills soon.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", e.admin.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: %s\r\n\r\n", e.admin.Listener.Addr())
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, ": breakwater events") {
			break // subscribed
		}
	}

	// Stop reading and publish until events are being dropped.
	start := time.Now()
	published := 0
	for e.hub.Dropped() < 1000 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after %d events in 20s, still only %d dropped", published, e.hub.Dropped())
		}
		for range 1000 {
			e.hub.Publish("breaker", map[string]any{"breaker": "filler", "from": "closed", "to": "open"})
		}
		published += 1000
	}
	if resp, _ := e.get("/while/stalled"); resp.StatusCode != 200 {
		t.Fatalf("data plane while a subscriber is stalled: %d", resp.StatusCode)
	}
	dropped := e.hub.Dropped()
	t.Logf("%d events published in %s, %d dropped", published, time.Since(start).Round(time.Millisecond), dropped)

	// Read again: after the backlog come "dropped" reports, then newer
	// events. The handler may still be full when reading resumes, so the
	// marker is published until one gets through.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	type result struct {
		reports       int
		missed, total uint64
		err           error
	}
	got := make(chan result, 1)
	go func() {
		// The handler reports misses before each event it does deliver, so
		// while it catches up there may be several reports; their missed
		// counts add up to the last total.
		var r result
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				r.err = err
				got <- r
				return
			}
			var m, tot uint64
			if n, _ := fmt.Sscanf(line, `data: {"type":"dropped","data":{"missed":%d,"total":%d}}`, &m, &tot); n == 2 {
				r.reports++
				r.missed += m
				r.total = tot
			}
			if line == "event: reload\n" {
				got <- r
				return
			}
		}
	}()
	var r result
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
publish:
	for {
		e.hub.Publish("reload", map[string]any{"ok": true})
		select {
		case r = <-got:
			break publish
		case <-tick.C:
		}
	}
	if r.err != nil {
		t.Fatalf("reading the backlog: %v (%d dropped reports seen)", r.err, r.reports)
	}
	if r.reports == 0 || r.missed != r.total || r.total < dropped || r.total > e.hub.Dropped() {
		t.Errorf("%d dropped reports: missed adds up to %d, last total %d; want ≥ %d (≤ %d)", r.reports, r.missed, r.total, dropped, e.hub.Dropped())
	}
	dropped = e.hub.Dropped()
	_, body := e.call("GET", "/health", "")
	if !strings.Contains(string(body), fmt.Sprintf(`"events_dropped": %d`, dropped)) {
		t.Errorf("/health events_dropped, want %d: %s", dropped, body)
	}
	if v := e.metric("breakwater_events_dropped_total", nil); v != float64(dropped) {
		t.Errorf("breakwater_events_dropped_total %v, want %d", v, dropped)
	}
}
