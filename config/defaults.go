package config

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// safeDefaults are what every route gets for the keys that neither it, its
// upstream nor `defaults:` set. They are written in the file's own syntax
// and decoded by the same strict decoder, so they cannot drift from it.
const safeDefaults = `
timeout: 30s              # long enough for slow APIs, short enough to free a stuck caller
stream_idle_timeout: 5m   # a silent SSE stream this long is dead
errors: auto              # JSON-RPC callers (MCP) get JSON-RPC errors, others RFC 9457
retry:
  attempts: 3             # one try and two retries: rides out a blip, bounded amplification
  backoff: { initial: 100ms, max: 2s, multiplier: 2, jitter: 0.25 }
  on: [connect_error, 502, 503, 504]   # gateway errors; a 500 is often a bug that repeats
  methods: [GET, HEAD, OPTIONS, PUT, DELETE]   # idempotent only: POST twice can charge twice
  per_try_timeout: 0s     # none: the route timeout bounds attempts
  retry_after: { honor: true, max: 30s }       # the upstream knows its own recovery time
  budget: { ratio: 0.2, min_concurrent: 3 }    # retries never more than 20% of load
  max_body: 1MiB          # replay buffers cost memory per request
  tools: all              # a tools/call is a POST: methods already keeps it from being repeated
circuit_breaker:
  failure_rate: 50%       # half the calls failing is an outage, not noise
  min_requests: 20        # never judge on a handful
  window: 30s
  delay: 10s              # give it time to recover before probing
  half_open_requests: 3
  success_threshold: 2    # two good probes, not one lucky one
  on: [connect_error, timeout, 5xx]
`

// blockDefaults fill the keys of policies that are off until a file turns
// them on (setting them here enables nothing).
const blockDefaults = `
bulkhead: { max_concurrent: 100, max_queue: 1000, max_wait: 0s }   # 0s: a full bulkhead sheds load at once; a bounded queue when it may wait
rate_limit: { burst: 0, key: client_ip, max_wait: 0s }  # burst 0 = one period's worth
hedge: { delay: 200ms, max: 1 }                   # one extra copy: p99 cut without doubling load
cache:
  ttl: 1m
  stale_if_error: 0s      # no stale answers unless asked for
  max_entry_size: 1MiB
  max_size: 64MiB
  vary: []
  per_client: true        # on client_auth routes, one client's answer is never another's
fallback: { status: 503, content_type: application/json, body: '{"error":"unavailable"}' }
`

// serverDefaults fill the data listener's limits. drain_delay and
// trusted_proxies have none: 0s and [] are what they mean unset.
const serverDefaults = `
read_header_timeout: 10s  # slowloris guard: a client must send its headers within this
idle_timeout: 120s        # idle keep-alive client connections are closed after this
max_header_bytes: 64KiB   # generous for cookies and tokens, far from a memory problem
max_body: 10MiB           # larger request bodies get 413 before anything is buffered
body_idle_timeout: 30s    # a stalled upload would hold a goroutine, a buffer and a bulkhead slot for ever
shutdown_timeout: 30s     # in-flight requests get this long to finish at shutdown
`

// quotaDefaults fill an upstream quota block.
const quotaDefaults = `
burst: 1                  # spread the quota evenly: SaaS limits are often per second too
max_wait: 30s             # callers wait for a token rather than fail
honor_retry_after: true   # the upstream's own "slow down" is the best signal there is
max_pause: 60s            # ... but a bogus Retry-After cannot stall us for hours
`

func mustDecode(text string, v any) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(text), &n); err != nil {
		panic(err)
	}
	d := &decoder{lines: map[string]int{}}
	d.decode(n.Content[0], reflect.ValueOf(v).Elem(), "")
	if len(d.problems) > 0 {
		panic(Problems(d.problems))
	}
}

// applyDefaults fills every unset key, once, in one place.
func applyDefaults(c *Config) {
	if c.Version == 0 {
		c.Version = 1
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080" // loopback: a sidecar is reached from its own pod
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9901"
	}
	var server Server
	mustDecode(serverDefaults, &server)
	inherit(reflect.ValueOf(&c.Server).Elem(), reflect.ValueOf(&server).Elem())
	clientsDefaults(c)
	mcpDefaults(c)
	l := &c.Log
	setDefault(&l.fields, "level", &l.Level, "info")
	setDefault(&l.fields, "format", &l.Format, "json")
	setDefault(&l.fields, "access_log", &l.AccessLog, true)

	applyStoreDefaults(c)
	var quota Quota
	mustDecode(quotaDefaults, &quota)
	for name, u := range c.Upstreams {
		if u == nil {
			u = &Upstream{}
			c.Upstreams[name] = u
		}
		u.Name = name
		setDefault(&u.fields, "host_header", &u.HostHeader, "upstream")
		setDefault(&u.fields, "connect_timeout", &u.ConnectTimeout, Duration(5e9))
		setDefault(&u.fields, "response_header_timeout", &u.ResponseHeaderTimeout, Duration(30e9))
		setDefault(&u.fields, "max_idle_conns", &u.MaxIdleConns, 64) // per host: Go's 2 churns connections
		// Close idle connections before a typical upstream's own keep-alive
		// timeout, so Go rarely resends on a connection the upstream closed.
		setDefault(&u.fields, "idle_conn_timeout", &u.IdleConnTimeout, Duration(90e9))
		// The lean transport where it can serve (plain HTTP/1.1): it costs
		// less per request and sees the upstream's raw headers.
		transport := "standard"
		if strings.HasPrefix(strings.ToLower(u.URL), "http://") {
			transport = "fast"
		}
		setDefault(&u.fields, "transport", &u.Transport, transport)
		if u.Quota != nil {
			inherit(reflect.ValueOf(u.Quota).Elem(), reflect.ValueOf(&quota).Elem())
		}
		applyAuthDefaults(u)
		concurrencyDefaults(u)
		applyHealthDefaults(u)
	}

	var safe, blocks Policies
	mustDecode(safeDefaults, &safe)
	mustDecode(blockDefaults, &blocks)
	for _, r := range c.Routes {
		if r == nil {
			continue
		}
		var up *Upstream
		if u, ok := c.Upstreams[r.Upstream]; ok {
			up = u
		} else {
			up = &Upstream{}
		}
		r.Effective = resolve(r, up, &c.Defaults, &safe, &blocks)
	}
}

func setDefault[T any](f *fields, key string, dst *T, v T) {
	if !f.IsSet(key) {
		*dst = v
		f.markSet(key)
	}
}

// resolve computes a route's effective policies, key by key: the route's
// own, then its upstream's, then `defaults:`, then the safe defaults.
func resolve(r *Route, u *Upstream, defaults, safe, blocks *Policies) Effective {
	chain := []*Policies{&r.Policies, &u.Policies, defaults, safe}
	e := Effective{
		Timeout:           *firstSet(chain, func(p *Policies) *Duration { return p.Timeout }),
		StreamIdleTimeout: *firstSet(chain, func(p *Policies) *Duration { return p.StreamIdleTimeout }),
		Errors:            *firstSet(chain, func(p *Policies) *string { return p.Errors }),
	}
	e.Retry = resolveBlock(chain, blocks, func(p *Policies) *Retry { return p.Retry })
	// An upstream breaker is shared by every route to it that does not set
	// its own; it is not a template for per-route breakers.
	if u.CircuitBreaker != nil && !u.CircuitBreaker.Off && r.CircuitBreaker == nil {
		e.CircuitBreaker = resolveBlock([]*Policies{&u.Policies, defaults, safe}, blocks, func(p *Policies) *CircuitBreaker { return p.CircuitBreaker })
		e.SharedBreaker = true
	} else {
		noUp := []*Policies{&r.Policies, defaults, safe}
		if u.CircuitBreaker != nil && u.CircuitBreaker.Off {
			// `circuit_breaker: off` on the upstream turns breaking off for
			// routes that do not set their own, like any other block; it
			// fills no keys of the routes' own breakers.
			noUp = []*Policies{&r.Policies, &u.Policies, defaults, safe}
		}
		e.CircuitBreaker = resolveBlock(noUp, blocks, func(p *Policies) *CircuitBreaker { return p.CircuitBreaker })
	}
	e.Bulkhead = resolveBlock(chain, blocks, func(p *Policies) *Bulkhead { return p.Bulkhead })
	e.RateLimit = resolveBlock(chain, blocks, func(p *Policies) *RateLimit { return p.RateLimit })
	e.Hedge = resolveBlock(chain, blocks, func(p *Policies) *Hedge { return p.Hedge })
	e.Cache = resolveBlock(chain, blocks, func(p *Policies) *Cache { return p.Cache })
	e.Fallback = resolveBlock(chain, blocks, func(p *Policies) *Fallback { return p.Fallback })
	if e.RateLimit != nil && e.RateLimit.Burst == 0 {
		e.RateLimit.Burst = e.RateLimit.Rate.N
	}
	resolveClient(&e, chain)
	resolvePriority(&e, chain)
	e.DetectBody = DefaultDetectBody
	if e.Retry != nil && e.Retry.MaxBody > 0 {
		e.DetectBody = e.Retry.MaxBody
	}
	return e
}

func firstSet[T any](chain []*Policies, get func(*Policies) *T) *T {
	for _, p := range chain {
		if v := get(p); v != nil {
			return v
		}
	}
	var zero T
	return &zero
}

// offable is what every policy block pointer is.
type offable interface{ isOff() bool }

func (b *block) isOff() bool { return b.Off }

// resolveBlock merges one policy block along chain. The first block that
// is mentioned decides whether the policy is on; later ones, and then the
// block defaults, fill the keys it did not set. A turned-off ancestor
// contributes nothing.
func resolveBlock[T any, P interface {
	*T
	offable
}](chain []*Policies, blocks *Policies, get func(*Policies) P) P {
	var out P
	for _, p := range chain {
		b := get(p)
		if b == nil {
			continue
		}
		if out == nil {
			if b.isOff() {
				return nil
			}
			out = P(new(T))
			inherit(reflect.ValueOf(out).Elem(), reflect.ValueOf(b).Elem())
			continue
		}
		if !b.isOff() {
			inherit(reflect.ValueOf(out).Elem(), reflect.ValueOf(b).Elem())
		}
	}
	if out != nil {
		if d := get(blocks); d != nil {
			inherit(reflect.ValueOf(out).Elem(), reflect.ValueOf(d).Elem())
		}
	}
	return out
}

// breakerModes: a block that sets one breaker mode drops the other's keys.
var breakerModes = map[string][]string{
	"failure_threshold": {"failure_rate", "min_requests", "window"},
	"failure_rate":      {"failure_threshold"},
	"min_requests":      {"failure_threshold"},
	"window":            {"failure_threshold"},
}

// inherit copies into dst every key src set that dst did not, recursing into
// nested blocks so that inheritance is per key.
func inherit(dst, src reflect.Value) {
	df, sf := fieldsOf(dst), fieldsOf(src)
	if df == nil || sf == nil {
		return
	}
	t := dst.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || opts == "inline" || !f.IsExported() {
			continue
		}
		if !sf.IsSet(key) {
			continue
		}
		if excluded(df, key) {
			continue
		}
		if fieldsOf(dst.Field(i)) != nil {
			inherit(dst.Field(i), src.Field(i))
			df.markSet(key)
			continue
		}
		if df.IsSet(key) {
			continue
		}
		dst.Field(i).Set(deepCopy(src.Field(i)))
		df.markSet(key)
	}
}

func excluded(df *fields, key string) bool {
	for k, drops := range rateModes {
		if df.IsSet(k) && slices.Contains(drops, key) {
			return true
		}
	}
	for k, drops := range breakerModes {
		if df.IsSet(k) {
			for _, d := range drops {
				if d == key {
					return true
				}
			}
		}
	}
	return false
}

// fieldsOf finds the key-tracking fields of a struct value, if any.
func fieldsOf(v reflect.Value) *fields {
	if v.Kind() != reflect.Struct || !v.CanAddr() {
		return nil
	}
	if k, ok := v.Addr().Interface().(interface{ keys() *fields }); ok {
		return k.keys()
	}
	return nil
}

func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		return c
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		c := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			c.SetMapIndex(iter.Key(), iter.Value())
		}
		return c
	}
	return v
}
