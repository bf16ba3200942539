package observe

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/breakwater-proxy/breakwater/policy"
)

// TestFanoutPublishesWhatMetricsCount: Metrics alone publishes nothing;
// Fanout counts the same and publishes each kind SPEC.md lists, with the
// data docs/admin.md documents.
func TestFanoutPublishesWhatMetricsCount(t *testing.T) {
	hub := NewHub()
	sub := hub.Subscribe(32)
	defer sub.Close()
	m := NewMetrics("test")
	report := func(o policy.Observer) {
		o.BreakerChanged("b", policy.Closed, policy.Open)
		o.BudgetExhausted("r")
		o.QuotaExhausted("up", "r", 2*time.Second)
		o.QuotaPaused("up", time.Second)
		o.Attempt("r", "up", "2xx", 0)
	}
	report(m)
	if n := len(sub.C); n != 0 {
		t.Fatalf("Metrics published %d events; it must publish none", n)
	}
	f := NewFanout(m, hub)
	report(f)
	f.Reloaded(false, "admin", "h1", []string{"f.yaml:1: x: bad"})
	f.Reloaded(true, "SIGHUP", "h2", nil)
	want := []string{
		`{"breaker":"b","from":"closed","to":"open"}`,
		`{"route":"r"}`,
		`{"retry_after_seconds":2,"route":"r","upstream":"up"}`,
		`{"pause_seconds":1,"upstream":"up"}`,
		`{"config_hash":"h1","errors":["f.yaml:1: x: bad"],"ok":false,"reason":"admin"}`,
		`{"config_hash":"h2","ok":true,"reason":"SIGHUP"}`,
	}
	types := []string{"breaker", "budget_exhausted", "quota_exhausted", "quota_paused", "reload", "reload"}
	for i, w := range want {
		select {
		case msg := <-sub.C:
			var ev struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(msg.JSON, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type != types[i] || string(ev.Data) != w {
				t.Errorf("event %d: %s %s, want %s %s", i, ev.Type, ev.Data, types[i], w)
			}
		default:
			t.Fatalf("event %d (%s) not published", i, types[i])
		}
	}
	for _, c := range []struct {
		got, want float64
		what      string
	}{
		{testutil.ToFloat64(m.breakerTrans.WithLabelValues("b", "closed", "open")), 2, "transitions"},
		{testutil.ToFloat64(m.budgetExhausted.WithLabelValues("r")), 2, "budget exhausted"},
		{testutil.ToFloat64(m.rateLimited.WithLabelValues("r", "quota")), 2, "quota refusals"},
		{testutil.ToFloat64(m.attempts.WithLabelValues("r", "up", "2xx")), 2, "attempts"},
		{testutil.ToFloat64(m.reloads.WithLabelValues("failure")), 1, "failed reloads"},
		{testutil.ToFloat64(m.reloads.WithLabelValues("success")), 1, "reloads"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}
