package observe

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The store's observations: calls counted and timed (skipped ones not
// timed), the fallback gauge, and `event: store` on each change.
func TestFanoutStore(t *testing.T) {
	hub := NewHub()
	sub := hub.Subscribe(8)
	defer sub.Close()
	m := NewMetrics("test")
	f := NewFanout(m, hub)
	f.StoreCall("quota", "ok", time.Millisecond)
	f.StoreCall("quota", "skipped", 0)
	f.StoreState(false, "dial tcp 127.0.0.1:6379: connection refused")
	if got := testutil.ToFloat64(m.store.fallback); got != 1 {
		t.Fatalf("breakwater_store_fallback = %v while falling back, want 1", got)
	}
	f.StoreState(true, "")
	if got := testutil.ToFloat64(m.store.fallback); got != 0 {
		t.Fatalf("breakwater_store_fallback = %v once back, want 0", got)
	}
	if got := testutil.ToFloat64(m.store.requests.WithLabelValues("quota", "skipped")); got != 1 {
		t.Fatalf("skipped calls = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.store.duration); n != 1 {
		t.Fatalf("%d duration series, want 1 (quota)", n)
	}
	for _, want := range []string{
		`{"error":"dial tcp 127.0.0.1:6379: connection refused","state":"fallback"}`,
		`{"error":"","state":"ok"}`,
	} {
		select {
		case msg := <-sub.C:
			var ev struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(msg.JSON, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type != "store" || string(ev.Data) != want {
				t.Errorf("event %s %s, want store %s", ev.Type, ev.Data, want)
			}
		default:
			t.Fatalf("event store %s not published", want)
		}
	}
}
