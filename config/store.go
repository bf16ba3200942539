package config

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
)

// Store is the state shared by replicas (SPEC Part 2 "Shared state across
// replicas"): a Redis (or Valkey) that holds the quotas, rate limits and
// cache entries marked `shared: true`. Nil means no store: every replica
// keeps its own state, and `shared: true` is a validation error.
type Store struct {
	Redis Redis `yaml:"redis" json:"redis"`
	// Replicas is how many sidecars share the store. It is used only while
	// the store is unreachable: each replica then holds rate/replicas of a
	// shared quota or rate limit. Defaulted to 1 (with a warning when a
	// shared quota or rate limit exists): a replica alone holds the whole rate.
	Replicas int `yaml:"replicas" json:"replicas"`
	// OnError decides what a shared quota or rate limit does while the
	// store fails or is slow: local (a local bucket at rate/replicas),
	// allow (unlimited) or deny (quota_exhausted / rate_limited). The
	// cache always falls back to local only.
	OnError string `yaml:"on_error" json:"on_error"`

	replicasSet bool // the file set replicas (IsSet says true once defaulted)
	fields
}

// Redis is how to reach the store.
type Redis struct {
	// URL is redis://[user@]host:port/db or rediss:// (TLS). It must not
	// carry a password: use Password. In sentinel and cluster modes its
	// host is a fallback for Addrs, and its user, db and TLS still apply.
	URL string `yaml:"url" json:"url"`
	// Mode is single (default), sentinel (MasterName, Addrs of the
	// sentinels) or cluster (Addrs of seed nodes).
	Mode       string   `yaml:"mode" json:"mode"`
	MasterName string   `yaml:"master_name" json:"master_name,omitempty"`
	Addrs      []string `yaml:"addrs" json:"addrs,omitempty"`
	// Password authenticates to Redis (and to the sentinels); "" means none.
	Password Secret `yaml:"password" json:"password"`
	// Timeout bounds one store call, network included; past it the
	// fallback decides. Always above 0 once defaulted (50ms).
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// KeyPrefix starts every key breakwater writes ("breakwater:" by
	// default), so that one Redis can serve other tenants too.
	KeyPrefix string `yaml:"key_prefix" json:"key_prefix"`

	fields
}

// storeDefaults fill a store block.
const storeDefaults = `
redis:
  mode: single            # one Redis (or a managed endpoint that hides its topology)
  timeout: 50ms           # a store call costs at most this; past it the request goes on with the fallback
  key_prefix: "breakwater:"   # one Redis can hold other tenants' keys too
replicas: 1               # unknown: assume alone (each replica then holds the whole rate while the store is down)
on_error: local           # never fail a request because of the store, never let the fleet run unlimited
`

// applyStoreDefaults fills the store block's unset keys.
func applyStoreDefaults(c *Config) {
	if c.Store == nil {
		return
	}
	c.Store.replicasSet = c.Store.IsSet("replicas")
	var d Store
	mustDecode(storeDefaults, &d)
	inherit(reflect.ValueOf(c.Store).Elem(), reflect.ValueOf(&d).Elem())
}

// validateStore checks the store block and every `shared: true`.
func (v *validator) store() {
	c := v.c
	if s := c.Store; s != nil {
		r := &s.Redis
		switch r.Mode {
		case "single", "sentinel", "cluster":
		default:
			v.errorf("store.redis.mode", "want single, sentinel or cluster, got %q", r.Mode)
		}
		if r.URL == "" && (r.Mode == "single" || len(r.Addrs) == 0) {
			v.errorf("store.redis.url", "a store needs a url such as redis://redis:6379/0")
		}
		if r.URL != "" {
			p, err := url.Parse(r.URL)
			switch {
			case err != nil || p.Host == "":
				v.errorf("store.redis.url", "want redis://host:port/db or rediss://host:port/db")
			case p.Scheme != "redis" && p.Scheme != "rediss":
				v.errorf("store.redis.url", "scheme must be redis or rediss, got %q", p.Scheme)
			case p.User != nil && hasPassword(p.User):
				v.errorf("store.redis.url", "a password in the URL would show in /config: use store.redis.password (e.g. ${REDIS_PASSWORD})")
			}
		}
		if r.Mode == "sentinel" && r.MasterName == "" {
			v.errorf("store.redis.master_name", "sentinel mode needs the master's name")
		}
		if r.Mode == "sentinel" && len(r.Addrs) == 0 {
			v.errorf("store.redis.addrs", "sentinel mode needs the sentinels' addresses")
		}
		if r.Timeout <= 0 {
			v.errorf("store.redis.timeout", "must be above 0")
		}
		if r.Mode == "cluster" {
			v.clusterKeyPrefix(r.KeyPrefix)
		}
		if s.Replicas < 1 {
			v.errorf("store.replicas", "must be at least 1")
		}
		switch s.OnError {
		case "local", "allow", "deny":
		default:
			v.errorf("store.on_error", "want local, allow or deny, got %q", s.OnError)
		}
	}
	sharedRate := false
	need := func(path string) {
		if c.Store == nil {
			v.errorf(path, "shared: true needs a store: add a top-level store block (store.redis.url)")
		}
	}
	for name, u := range c.Upstreams {
		if u != nil && u.Quota != nil && u.Quota.Shared {
			need("upstreams." + name + ".quota.shared")
			sharedRate = true
		}
		if u != nil {
			sharedRate = v.sharedPolicies("upstreams."+name, &u.Policies, need) || sharedRate
		}
	}
	sharedRate = v.sharedPolicies("defaults", &c.Defaults, need) || sharedRate
	for i, r := range c.Routes {
		if r != nil {
			sharedRate = v.sharedPolicies(routePath(i), &r.Policies, need) || sharedRate
		}
	}
	if s := c.Store; s != nil && sharedRate && !s.replicasSet {
		v.warnf("store", "store.replicas is not set: while the store is unreachable each replica holds the whole shared rate")
	}
}

// sharedPolicies checks a policy block's shared flags; it reports whether
// a shared rate limit is among them.
func (v *validator) sharedPolicies(path string, p *Policies, need func(string)) bool {
	rate := false
	if rl := p.RateLimit; rl != nil && !rl.Off && rl.Shared {
		need(path + ".rate_limit.shared")
		rate = true
	}
	if ca := p.Cache; ca != nil && !ca.Off && ca.Shared {
		need(path + ".cache.shared")
	}
	return rate
}

func hasPassword(u *url.Userinfo) bool {
	_, ok := u.Password()
	return ok
}

func routePath(i int) string { return fmt.Sprintf("routes[%d]", i) }

// clusterKeyPrefix checks a cluster's key_prefix against Redis Cluster's
// hash tags: a key's slot is computed from the text between its first "{"
// and the next "}", and breakwater tags each quota's and each limit's keys
// so that its scripts' keys share a slot. A tag in the prefix comes first
// and wins. An empty one ("{}") makes Redis hash the whole key, so a
// script's keys land in different slots and every call fails (CROSSSLOT);
// any other puts every key breakwater writes in one slot, on one node.
func (v *validator) clusterKeyPrefix(prefix string) {
	open := strings.IndexByte(prefix, '{')
	if open < 0 {
		return
	}
	end := strings.IndexByte(prefix[open+1:], '}')
	switch {
	case end < 0:
		// The tag closes in breakwater's own part of the key: still one per quota or limit.
	case end == 0:
		v.errorf("store.redis.key_prefix", "%q holds an empty hash tag {}: Redis Cluster would hash each key whole and refuse breakwater's multi-key scripts (CROSSSLOT); drop the braces", prefix)
	default:
		v.warnf("store.redis.key_prefix", "%q holds a hash tag: in cluster mode every key breakwater writes would land in one slot, on one node", prefix)
	}
}
