package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// The cost of a quota token: in process, and on a real redis-server on
// loopback (one script call). The rate is high enough never to wait, so
// this is the bookkeeping alone. README: "Shared state".
func BenchmarkQuota(b *testing.B) {
	cfg := config.Quota{Rate: config.Rate{N: 1_000_000_000, Period: time.Second}, Burst: 1_000_000, MaxWait: config.Duration(time.Second), Shared: true}
	b.Run("local", func(b *testing.B) {
		q := ratelimit.NewQuota(cfg, ratelimit.NewBucket(cfg), nil)
		for b.Loop() {
			if _, err := q.WaitPriority(context.Background(), 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("shared", func(b *testing.B) {
		r := testkit.StartRedis(b)
		c, err := store.New(&config.Store{Redis: config.Redis{URL: r.URL, Mode: "single", Timeout: config.Duration(time.Second), KeyPrefix: "bench:"}, Replicas: 1, OnError: "local"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		q := store.NewQuota(c, "api", cfg, nil)
		for b.Loop() {
			if _, err := q.WaitPriority(context.Background(), 0); err != nil {
				b.Fatal(err)
			}
		}
		if st, _ := c.State(); st != "ok" {
			b.Fatal("the store fell back during the benchmark")
		}
	})
}
