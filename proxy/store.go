package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// The shared pieces (SPEC Part 2 "Shared state across replicas"): which of
// the local quota, limiter and cache or their store-backed twins a route
// gets is decided here, once per build, from the resolved config.

// UpstreamQuota is an upstream quota as the pipeline and the admin API use
// it: *ratelimit.Quota in this process, or *store.Quota shared by replicas.
type UpstreamQuota interface {
	policy.Quota
	// Snapshot is the quota's state now, for /health and the dashboard.
	Snapshot() ratelimit.QuotaSnapshot
}

var (
	_ UpstreamQuota = (*ratelimit.Quota)(nil)
	_ UpstreamQuota = (*store.Quota)(nil)
	_ RateLimiter   = (*store.Limiter)(nil)
)

// storeKey identifies a store's settings for the registry. config.Secret
// marshals as [REDACTED], so the password enters as a digest: a rotated
// password then makes a new client, and the value itself is kept nowhere.
func storeKey(s *config.Store) string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256([]byte(s.Redis.Password.Reveal()))
	return string(b) + hex.EncodeToString(sum[:8])
}

// buildStore returns the running store client for cfg.Store (carried across
// reloads while its settings stay), or nil without a store.
func (s *Server) buildStore(cfg *config.Config, reg *policy.Registry) (*store.Client, error) {
	if cfg.Store == nil {
		return nil, nil
	}
	var buildErr error
	c := policy.Get(reg, "store", "", storeKey(cfg.Store), func() *store.Client {
		c, err := store.New(cfg.Store, s.metrics)
		buildErr = err
		return c
	})
	if buildErr != nil {
		return nil, buildErr
	}
	return c, nil
}

// sharedQuota is upstream name's quota on the store.
func sharedQuota(reg *policy.Registry, c *store.Client, key, name string, q config.Quota) UpstreamQuota {
	return policy.Get(reg, "quota/shared", name, []any{q, key}, func() *store.Quota { return store.NewQuota(c, name, q) })
}

// sharedLimiter is route name's rate limit on the store.
func sharedLimiter(reg *policy.Registry, c *store.Client, key, name string, l *config.RateLimit) RateLimiter {
	return policy.Get(reg, "ratelimit/shared", name, []any{l, key}, func() *store.Limiter {
		var ws []store.Window
		for _, w := range l.Windows() {
			ws = append(ws, store.Window{Rate: w.Rate, Burst: w.Burst})
		}
		return store.NewLimiter(c, name, ws...)
	})
}

// sharedCache is route name's cache on the store.
func sharedCache(reg *policy.Registry, c *store.Client, key, name string, cc *config.Cache) cache.Store {
	return policy.Get(reg, "cache/shared", name, []any{cc, key}, func() cache.Store {
		return store.NewCache(c, name, cc.TTL.D(), cc.TTL.D()+cc.StaleIfError.D(), int64(cc.MaxEntrySize), int64(cc.MaxSize))
	})
}

// closeStore closes a store client the new table no longer uses, once the
// requests of the old table have had time to finish.
func closeStore(old, cur *store.Client, after time.Duration) {
	if old != nil && old != cur {
		time.AfterFunc(after, func() { _ = old.Close() })
	}
}
