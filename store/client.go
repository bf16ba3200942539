// Package store is the state that replicas share through Redis (or Valkey,
// or a managed Redis): the upstream quota and its Retry-After pause
// (Quota), route rate limits (Limiter) and cache entries (Cache). It is
// the only package that imports the Redis client.
//
// A store call never fails a request by itself. Client is a circuit breaker
// around Redis: the first call that fails or passes the timeout switches
// the client to fallback, where calls cost one atomic load and each shared
// piece uses its local stand-in (store.on_error); a background probe
// switches it back once Redis takes a write again, without a reload.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-proxy/breakwater/config"
)

// Observer receives what the store does: breakwater_store_* metrics and the
// /events `store` event. observe.Fanout implements it. A nil Observer
// observes nothing.
type Observer interface {
	// StoreCall reports one store call: op is quota, pause, refund,
	// ratelimit, cache_get, cache_set, cache_purge or snapshot; result is
	// ok, error, timeout or skipped (not tried: falling back).
	StoreCall(op, result string, d time.Duration)
	// StoreState reports a change: ok false means falling back, with why.
	StoreState(ok bool, reason string)
}

// ErrFallback is what a call returns, without trying, while the store is
// unreachable.
var ErrFallback = errors.New("store: unreachable, falling back")

// probeEvery is how often a client that fell back asks Redis whether it is
// back: with stateHold, well inside the 2 s allowed for returning to
// shared state.
const probeEvery = 250 * time.Millisecond

// stateHold is the least time a fallback lasts: the state changes at most
// once a second, however a store flaps. A fallback is never delayed (a
// store that fails must not cost each request its timeout); the return to
// ok is.
const stateHold = time.Second

// probeKey is the key the probe writes (under key_prefix), and probeTTL how
// long it lives: the probe is a write, because a store that answers PING
// but refuses writes (out of memory with noeviction, a read-only replica)
// fails every call breakwater makes.
const (
	probeKey = "store-probe"
	probeTTL = 10 * time.Second
)

// Client is one store connection (a go-redis universal client) with its
// breaker. It is safe for concurrent use. Use New; Close when done.
type Client struct {
	rdb      redis.UniversalClient
	prefix   string
	timeout  time.Duration
	replicas int
	onError  string
	obs      Observer

	fallback atomic.Bool
	falls    atomic.Uint64 // how many times the client fell back: each fallback's number
	mu       sync.Mutex
	reason   string
	closed   chan struct{}
	once     sync.Once
	probing  sync.WaitGroup // the probe goroutine; Close waits for it
}

// New connects lazily to the store cfg describes: nothing is dialled until
// the first call, so a store that is down at start only means fallback.
// obs may be nil.
func New(cfg *config.Store, obs Observer) (*Client, error) {
	rdb, err := newUniversal(cfg.Redis)
	if err != nil {
		return nil, err
	}
	return &Client{
		rdb: rdb, prefix: cfg.Redis.KeyPrefix, timeout: cfg.Redis.Timeout.D(),
		replicas: max(cfg.Replicas, 1), onError: cfg.OnError, obs: obs, closed: make(chan struct{}),
	}, nil
}

// newUniversal builds the go-redis client for the mode. Retries are off
// (the fallback, not a retry loop, answers a failure) and every timeout is
// the store timeout, so no call can outlast it.
func newUniversal(r config.Redis) (redis.UniversalClient, error) {
	base := &redis.Options{}
	if r.URL != "" {
		var err error
		if base, err = redis.ParseURL(r.URL); err != nil {
			return nil, errors.New("store.redis.url: not a redis:// or rediss:// URL")
		}
	}
	if pw := r.Password.Reveal(); pw != "" {
		base.Password = pw
	}
	t := r.Timeout.D()
	addrs := r.Addrs
	if len(addrs) == 0 && base.Addr != "" {
		addrs = []string{base.Addr}
	}
	switch r.Mode {
	case "sentinel":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: r.MasterName, SentinelAddrs: addrs, SentinelPassword: base.Password,
			Username: base.Username, Password: base.Password, DB: base.DB, TLSConfig: base.TLSConfig,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t, PoolTimeout: t, MaxRetries: -1,
			ContextTimeoutEnabled: true, DisableIdentity: true,
		}), nil
	case "cluster":
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: addrs, Username: base.Username, Password: base.Password, TLSConfig: base.TLSConfig,
			DialTimeout: t, ReadTimeout: t, WriteTimeout: t, PoolTimeout: t, MaxRetries: -1,
			ContextTimeoutEnabled: true, DisableIdentity: true,
		}), nil
	}
	base.DialTimeout, base.ReadTimeout, base.WriteTimeout, base.PoolTimeout = t, t, t, t
	base.MaxRetries = -1
	base.ContextTimeoutEnabled = true
	base.DisableIdentity = true
	return redis.NewClient(base), nil
}

// Close stops the probe and closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	c.once.Do(func() { close(c.closed) })
	c.mu.Unlock()
	err := c.rdb.Close()
	c.probing.Wait()
	return err
}

// Replicas is store.replicas: the share of a rate each replica holds while
// falling back.
func (c *Client) Replicas() int { return c.replicas }

// OnError is store.on_error: local, allow or deny.
func (c *Client) OnError() string { return c.onError }

// State is "ok" or "fallback", with the error that caused a fallback.
func (c *Client) State() (state, reason string) {
	if !c.fallback.Load() {
		return "ok", ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return "fallback", c.reason
}

// key prefixes a key with store.redis.key_prefix.
func (c *Client) key(parts ...string) string {
	n := len(c.prefix)
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, c.prefix...)
	for _, p := range parts {
		b = append(b, p...)
	}
	return string(b)
}

// do runs one store call within the timeout, through the breaker. While
// falling back it returns ErrFallback at once. redis.Nil (no such key) is
// an answer, not a failure.
func (c *Client) do(op string, fn func(ctx context.Context) error) error {
	if c.fallback.Load() {
		c.observe(op, "skipped", 0)
		return ErrFallback
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	start := time.Now()
	err := fn(ctx)
	cancel()
	d := time.Since(start)
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		c.observe(op, "ok", d)
		return err
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		c.observe(op, "timeout", d)
		c.fail("timeout: no answer within store.redis.timeout")
	default:
		c.observe(op, "error", d)
		c.fail(err.Error())
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (c *Client) observe(op, result string, d time.Duration) {
	if c.obs != nil {
		c.obs.StoreCall(op, result, d)
	}
}

// fail switches to fallback (once) and starts the probe that switches back.
func (c *Client) fail(reason string) {
	c.mu.Lock()
	c.reason = reason
	c.mu.Unlock()
	if !c.fallback.CompareAndSwap(false, true) {
		return
	}
	c.falls.Add(1)
	if c.obs != nil {
		c.obs.StoreState(false, reason)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed: // a closed client does not probe
	default:
		c.probing.Add(1) // under mu, so never after Close started waiting
		go func() {
			defer c.probing.Done()
			c.probe()
		}()
	}
}

// probe writes to the store until a write succeeds, then ends the
// fallback: no sooner than stateHold after it began, and then every
// probeEvery.
func (c *Client) probe() {
	wait := time.NewTimer(stateHold)
	defer wait.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-wait.C:
		}
		wait.Reset(probeEvery)
		ctx, cancel := context.WithTimeout(context.Background(), max(c.timeout, 100*time.Millisecond))
		err := c.rdb.Set(ctx, c.key(probeKey), "1", probeTTL).Err()
		cancel()
		if err == nil {
			c.fallback.Store(false)
			if c.obs != nil {
				c.obs.StoreState(true, "")
			}
			return
		}
		c.mu.Lock()
		c.reason = err.Error()
		c.mu.Unlock()
	}
}

// RouteLogs sends the Redis client's own log lines (pool dial failures,
// printed to stderr by default) to printf. The client keeps one logger
// per process, so main calls this once; the store's state changes are
// reported through Observer anyway, so these lines are debug detail.
func RouteLogs(printf func(msg string)) { redis.SetLogger(logFunc(printf)) }

type logFunc func(string)

func (f logFunc) Printf(_ context.Context, format string, v ...any) { f(fmt.Sprintf(format, v...)) }
