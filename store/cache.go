package store

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-proxy/breakwater/cache"
)

// Cache is a route cache shared by every replica: entries live on the
// store with an expiry of ttl + stale_if_error, and a small local copy
// (cache.Memory) sits in front so that hot entries cost no round trip.
// While the store is unreachable only the local copy is used. It
// implements cache.Store. Use NewCache.
type Cache struct {
	c       *Client
	prefix  string
	ttl     time.Duration
	keep    time.Duration
	maxSize int64
	local   *cache.Memory
}

// localShare bounds the local copy in front of a shared cache: a fraction
// of max_size, since the store holds the rest.
const localShare = 8

// NewCache returns route's shared cache: ttl is how long an entry is
// fresh, keep how long the store keeps it (ttl + stale_if_error), maxEntry
// the largest entry stored (max_entry_size) and maxSize the route cache's
// max_size.
func NewCache(c *Client, route string, ttl, keep time.Duration, maxEntry, maxSize int64) *Cache {
	return &Cache{
		c: c, prefix: c.key("cache:", route, ":"), ttl: ttl, keep: keep, maxSize: maxEntry,
		local: cache.NewMemory(max(maxSize/localShare, min(maxEntry, maxSize))),
	}
}

// wireEntry is an entry as stored: JSON, the body base64.
type wireEntry struct {
	Status int         `json:"s"`
	Header http.Header `json:"h,omitempty"`
	Body   []byte      `json:"b,omitempty"`
	Stored int64       `json:"t"` // Unix nanoseconds
}

// Get returns the local copy while it is fresh, else the store's entry
// (then copied locally): another replica may have stored a fresher one.
// With the store unreachable, a local copy of any age is returned.
func (s *Cache) Get(key string) (*cache.Entry, bool) {
	local, ok := s.local.Get(key)
	if ok && local.Age(time.Now()) < s.ttl {
		return local, true
	}
	if e, found := s.fetch(key); found && (!ok || e.Stored.After(local.Stored)) {
		s.local.Set(key, e)
		return e, true
	}
	return local, ok
}

// fetch reads key's entry from the store.
func (s *Cache) fetch(key string) (*cache.Entry, bool) {
	var raw []byte
	err := s.c.do("cache_get", func(ctx context.Context) error {
		var err error
		raw, err = s.c.rdb.Get(ctx, s.prefix+key).Bytes()
		return err
	})
	if err != nil {
		return nil, false
	}
	var w wireEntry
	if json.Unmarshal(raw, &w) != nil {
		return nil, false
	}
	return &cache.Entry{Status: w.Status, Header: w.Header, Body: w.Body, Stored: time.Unix(0, w.Stored)}, true
}

// Set stores e on the store (synchronously: the caller stores before its
// client's answer ends, so that another replica can serve it at once) and
// in the local copy. An entry above max_entry_size, or nil, removes key.
func (s *Cache) Set(key string, e *cache.Entry) {
	s.local.Set(key, e)
	if e == nil || e.Size() > s.maxSize {
		_ = s.c.do("cache_set", func(ctx context.Context) error { return s.c.rdb.Del(ctx, s.prefix+key).Err() })
		return
	}
	raw, err := json.Marshal(wireEntry{Status: e.Status, Header: e.Header, Body: e.Body, Stored: e.Stored.UnixNano()})
	if err != nil {
		return
	}
	ttl := s.keep - time.Since(e.Stored)
	if ttl <= 0 {
		return
	}
	_ = s.c.do("cache_set", func(ctx context.Context) error { return s.c.rdb.Set(ctx, s.prefix+key, raw, ttl).Err() })
}

// Purge drops the route's entries, locally and on the store.
func (s *Cache) Purge() {
	s.local.Purge()
	purge := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, s.prefix+"*", 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 500 {
				if err := c.Unlink(ctx, batch...).Err(); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	// A purge may scan many keys: it gets ten store timeouts, not one.
	_ = s.c.do("cache_purge", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*s.c.timeout)
		defer cancel()
		switch r := s.c.rdb.(type) {
		case *redis.ClusterClient:
			return r.ForEachMaster(ctx, purge)
		case *redis.Client:
			return purge(ctx, r)
		}
		return nil
	})
}

// Stats describes the local copy.
func (s *Cache) Stats() cache.Stats { return s.local.Stats() }

var _ cache.Store = (*Cache)(nil)

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}
