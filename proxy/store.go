package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/breakwater-proxy/breakwater/cache"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/lifecycle"
	"github.com/breakwater-proxy/breakwater/policy"
	"github.com/breakwater-proxy/breakwater/ratelimit"
	"github.com/breakwater-proxy/breakwater/store"
)

// The shared pieces (SPEC Part 2 "Shared state across replicas"): which of
// the local quota, limiter and cache or their store-backed twins a route
// gets is decided here, once per build, from the resolved config.

// UpstreamQuota is an upstream quota as the pipeline and the admin API use
// it: a *ratelimit.Quota, over a bucket in this process or on the store.
type UpstreamQuota interface {
	policy.Quota
	// Snapshot is the quota's state now, for /health and the dashboard.
	Snapshot() ratelimit.QuotaSnapshot
}

var (
	_ UpstreamQuota = (*ratelimit.Quota)(nil)
	_ RateLimiter   = (*store.Limiter)(nil)
	_ RateLimiter   = (*ratelimit.Limiter)(nil)
)

// quotaQueue reports an upstream quota's waiters as queue metrics, the
// same whether its bucket is here or on the store.
type quotaQueue struct {
	obs      policy.Observer
	upstream string
}

func (q quotaQueue) Waiting(prio, delta int) {
	q.obs.QueueWaiting("quota", q.upstream, policy.Priority(prio), delta)
}

func (q quotaQueue) Waited(prio int, d time.Duration) {
	q.obs.QueueWaited("quota", q.upstream, policy.Priority(prio), d)
}

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
func (s *Server) buildStore(cfg *config.Config, reg *lifecycle.Registry) (*store.Client, error) {
	if cfg.Store == nil {
		return nil, nil
	}
	c, err := lifecycle.TryGet(reg, "store", "", storeKey(cfg.Store), func() (storeClient, error) {
		c, err := store.New(cfg.Store, s.metrics)
		return storeClient{c}, err
	})
	return c.Client, err
}

// storeClient is a store client as the registry owns it: one a reload
// dropped is closed once the old table's requests have had their grace.
type storeClient struct{ *store.Client }

func (storeClient) Retire() {} // the old table's requests still use it

func (c storeClient) Close(context.Context) error { return c.Client.Close() }

// sharedQuota is upstream name's quota on the store.
func sharedQuota(reg *lifecycle.Registry, c *store.Client, key, name string, q config.Quota, obs ratelimit.QueueObserver) UpstreamQuota {
	return lifecycle.Get(reg, "quota/shared", name, []any{q, key}, func() *ratelimit.Quota { return store.NewQuota(c, name, q, obs) })
}

// sharedLimiter is route name's rate limit on the store.
func sharedLimiter(reg *lifecycle.Registry, c *store.Client, key, name string, l *config.RateLimit) RateLimiter {
	return lifecycle.Get(reg, "ratelimit/shared", name, []any{l, key}, func() *store.Limiter {
		return store.NewLimiter(c, "rl", name, l.Windows()...)
	})
}

// sharedTierLimiter is tier name's rate_limits on the store: one bucket
// set per client id for every replica.
func sharedTierLimiter(reg *lifecycle.Registry, c *store.Client, key, name string, tc *config.Tier) RateLimiter {
	return lifecycle.Get(reg, "tier/shared", name, []any{tc, key}, func() *store.Limiter {
		return store.NewLimiter(c, "tier", name, config.WindowsOf(tc.RateLimits)...)
	})
}

// sharedCache is route name's cache on the store.
func sharedCache(reg *lifecycle.Registry, c *store.Client, key, name string, cc *config.Cache) cache.Store {
	return lifecycle.Get(reg, "cache/shared", name, []any{cc, key}, func() cache.Store {
		return store.NewCache(c, name, cc.TTL.D(), cc.TTL.D()+cc.StaleIfError.D(), int64(cc.MaxEntrySize), int64(cc.MaxSize))
	})
}
