// Package config reads, expands, decodes, defaults and validates a
// breakwater YAML file. It imports nothing else of breakwater's: proxy and
// policy consume the validated *Config it returns.
//
// A field's zero value means "not set" only where the doc says so; the
// policy blocks (Retry, CircuitBreaker, …) remember which keys the file set,
// so that inheritance (defaults → upstream → route) works key by key, and an
// explicit zero (`max_wait: 0s`) overrides an inherited value.
package config

// Config is one breakwater configuration file, decoded and defaulted.
type Config struct {
	Version int    `yaml:"version" json:"version"`
	Listen  string `yaml:"listen" json:"listen"`
	Admin   Admin  `yaml:"admin" json:"admin"`
	Server  Server `yaml:"server" json:"server"`
	Log     Log    `yaml:"log" json:"log"`
	// Store is the state shared by replicas; nil means none.
	Store     *Store               `yaml:"store" json:"store,omitempty"`
	Upstreams map[string]*Upstream `yaml:"upstreams" json:"upstreams"`
	Defaults  Policies             `yaml:"defaults" json:"-"`
	Routes    []*Route             `yaml:"routes" json:"routes"`
	// Clients and Tiers identify callers by API key (clients.go).
	Clients Clients          `yaml:"clients" json:"clients"`
	Tiers   map[string]*Tier `yaml:"tiers" json:"tiers,omitempty"`
	// MCP bounds what breakwater learns of MCP traffic (mcp.go).
	MCP MCP `yaml:"mcp" json:"mcp"`
	// Tracing exports OpenTelemetry spans; nil = no tracing (mcp.go).
	Tracing *Tracing `yaml:"tracing" json:"tracing,omitempty"`

	// File is the path the config was read from ("" in quick mode).
	File string `yaml:"-" json:"file,omitempty"`
	// Hash identifies the effective configuration: 16 hex digits of the
	// SHA-256 of its redacted JSON form (what /config shows). It changes
	// whenever a setting changes, but not when only a secret's value does
	// (see hash).
	Hash string `yaml:"-" json:"hash"`

	lines map[string]int // field path → line, for errors found after decoding
	// expanded holds the values of ${VAR}s, to redact those used in
	// secrets. They are Secrets because fmt prints unexported fields raw.
	expanded []Secret
	// fileValues hold what ${file:…} read (secrets, whatever they fill);
	// files are the paths named, for the watcher (SecretFiles).
	fileValues []Secret
	files      []string
	// redactor knows the fields that a variable filling a secret fills
	// too; nil for quick mode.
	redactor *redactor
	// view is what the config shows of itself when redactor knows such
	// fields (nil otherwise): see shown.
	view           *Config
	decodeProblems []Problem
}

// Admin is the admin listener: health, metrics, breakers, reload.
type Admin struct {
	// Listen is the admin address; "" means 127.0.0.1:9901.
	Listen string `yaml:"listen" json:"listen"`
	// AllowRemote must be true to bind anything but loopback.
	AllowRemote bool `yaml:"allow_remote" json:"allow_remote"`
	// Token, when set, is required as a bearer token on every admin POST.
	Token Secret `yaml:"token" json:"token"`
}

// Server holds the data-plane listener's limits.
type Server struct {
	ReadHeaderTimeout Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout" json:"idle_timeout"`
	MaxHeaderBytes    Size     `yaml:"max_header_bytes" json:"max_header_bytes"`
	// MaxBody is the largest request body accepted; larger ones get 413.
	MaxBody Size `yaml:"max_body" json:"max_body"`
	// BodyIdleTimeout: a request body that sends no byte for this long is
	// abandoned (408 request_timeout, connection closed). Every body read
	// is bounded by it: JSON-RPC detection, replay buffering, streaming to
	// the upstream. Always above 0 once defaulted (30s).
	BodyIdleTimeout Duration `yaml:"body_idle_timeout" json:"body_idle_timeout"`
	// TrustedProxies are CIDRs whose X-Forwarded-* headers are kept.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies"`
	// DrainDelay: after SIGTERM, keep serving this long while /readyz says 503.
	DrainDelay Duration `yaml:"drain_delay" json:"drain_delay"`
	// ShutdownTimeout bounds the wait for in-flight requests at shutdown.
	ShutdownTimeout Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`

	fields
}

// Log configures zerolog.
type Log struct {
	Level     string `yaml:"level" json:"level"`   // debug | info | warn | error
	Format    string `yaml:"format" json:"format"` // json | console
	AccessLog bool   `yaml:"access_log" json:"access_log"`

	fields
}

// Upstream is one API that routes forward to.
type Upstream struct {
	URL        string `yaml:"url" json:"url"`
	HostHeader string `yaml:"host_header" json:"host_header"` // upstream (default) | client
	TLS        TLS    `yaml:"tls" json:"tls"`

	ConnectTimeout        Duration `yaml:"connect_timeout" json:"connect_timeout"`
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout" json:"response_header_timeout"`
	// MaxConns caps connections to the upstream; 0 means no limit.
	MaxConns int `yaml:"max_conns" json:"max_conns"`
	// MaxIdleConns is kept per host (Go's default of 2 is far too low).
	MaxIdleConns    int      `yaml:"max_idle_conns" json:"max_idle_conns"`
	IdleConnTimeout Duration `yaml:"idle_conn_timeout" json:"idle_conn_timeout"`
	// Transport is how requests reach the upstream: "fast", breakwater's
	// lean HTTP/1.1 transport (plain http:// only; net/http's still takes
	// upgrades, 100-continue and bodies of unknown length), or "standard",
	// net/http's for every request. Resolved: fast for http://, standard
	// for https://.
	Transport string  `yaml:"transport" json:"transport"`
	Headers   Headers `yaml:"headers" json:"headers"`
	// Quota is the upstream's own limit, shared by every route to it; nil = none.
	Quota *Quota `yaml:"quota" json:"quota,omitempty"`
	// Concurrency is one set of slots shared by every route to this
	// upstream (a Bulkhead in Policies is a default each route holds on
	// its own); nil = none. Never inherited.
	Concurrency *Bulkhead `yaml:"concurrency" json:"concurrency,omitempty"`
	// Auth holds the upstream's credentials (an OAuth2 client); nil =
	// none. Never inherited.
	Auth *Auth `yaml:"auth" json:"auth,omitempty"`
	// HealthCheck is the upstream's active health check; nil = none
	// (config/health.go).
	HealthCheck *HealthCheck `yaml:"health_check" json:"health_check,omitempty"`

	// Policies are inherited by every route to this upstream, except
	// CircuitBreaker: an upstream breaker is one breaker shared by them all.
	Policies `yaml:",inline" json:",inline"`

	Name string `yaml:"-" json:"-"`
	fields
}

// TLS configures connections to an https upstream.
type TLS struct {
	CAFile             string `yaml:"ca_file" json:"ca_file"`
	ServerName         string `yaml:"server_name" json:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" json:"insecure_skip_verify"`
}

// Headers are changed on every request sent to the upstream.
type Headers struct {
	// Set replaces what the client sent; every value is a secret.
	Set    map[string]Secret `yaml:"set" json:"set"`
	Remove []string          `yaml:"remove" json:"remove"`
}

// Quota is the upstream's own rate limit, spent by every attempt.
type Quota struct {
	Rate Rate `yaml:"rate" json:"rate"`
	// Burst is the bucket size: 1 unless set, and never below 1 in a
	// validated config.
	Burst           int      `yaml:"burst" json:"burst"`
	MaxWait         Duration `yaml:"max_wait" json:"max_wait"`
	HonorRetryAfter bool     `yaml:"honor_retry_after" json:"honor_retry_after"`
	MaxPause        Duration `yaml:"max_pause" json:"max_pause"`
	// Shared makes every replica spend from one bucket on the store;
	// false keeps the quota in this process.
	Shared bool `yaml:"shared" json:"shared,omitempty"`

	fields
}

// Policies are the per-route resilience settings; Defaults, every Upstream
// and every Route carry one, and a route's effective policies are its own
// keys, then its upstream's, then Defaults', then the safe defaults.
// A nil block was not mentioned; a block with Off set was turned off.
type Policies struct {
	Timeout           *Duration       `yaml:"timeout" json:"timeout,omitempty"`
	StreamIdleTimeout *Duration       `yaml:"stream_idle_timeout" json:"stream_idle_timeout,omitempty"`
	Retry             *Retry          `yaml:"retry" json:"retry,omitempty"`
	CircuitBreaker    *CircuitBreaker `yaml:"circuit_breaker" json:"circuit_breaker,omitempty"`
	Bulkhead          *Bulkhead       `yaml:"bulkhead" json:"bulkhead,omitempty"`
	RateLimit         *RateLimit      `yaml:"rate_limit" json:"rate_limit,omitempty"`
	Hedge             *Hedge          `yaml:"hedge" json:"hedge,omitempty"`
	Cache             *Cache          `yaml:"cache" json:"cache,omitempty"`
	Fallback          *Fallback       `yaml:"fallback" json:"fallback,omitempty"`
	Errors            *string         `yaml:"errors" json:"errors,omitempty"` // auto | problem | jsonrpc
	// ClientAuth and ForwardClientID are the route's client identity
	// keys (clients.go); nil = not set here.
	ClientAuth      *string `yaml:"client_auth" json:"client_auth,omitempty"`             // required | optional | none
	ForwardClientID *string `yaml:"forward_client_id" json:"forward_client_id,omitempty"` // a header name; "" = none
	// Priority places the route's requests in the queues they wait in:
	// high | normal | low; nil = not set here.
	Priority *string `yaml:"priority" json:"priority,omitempty"`
}

// Route matches requests and sends them to one upstream.
type Route struct {
	Name        string                    `yaml:"name" json:"name"`
	Match       Match                     `yaml:"match" json:"match"`
	Upstream    string                    `yaml:"upstream" json:"upstream"`
	StripPrefix string                    `yaml:"strip_prefix" json:"strip_prefix,omitempty"`
	Policies    `yaml:",inline" json:"-"` // as written; Effective is what applies

	// Effective holds the resolved policies (after inheritance and safe
	// defaults); a nil block means that policy is off for this route.
	Effective Effective `yaml:"-" json:"effective"`
}

// Match selects requests; every non-empty condition must hold.
type Match struct {
	Path       string            `yaml:"path" json:"path,omitempty"`
	PathPrefix string            `yaml:"path_prefix" json:"path_prefix,omitempty"`
	Methods    []string          `yaml:"methods" json:"methods,omitempty"`
	Host       string            `yaml:"host" json:"host,omitempty"`
	Headers    map[string]string `yaml:"headers" json:"headers,omitempty"`
	// JSONRPCMethod and Tool match a JSON-RPC request's method and a
	// tools/call's tool name (one of the list), read from the body (never
	// from the Mcp-Method / Mcp-Name headers); "" and empty match anything.
	JSONRPCMethod string   `yaml:"jsonrpc_method" json:"jsonrpc_method,omitempty"`
	Tool          []string `yaml:"tool" json:"tool,omitempty"`
}

// Effective is a route's resolved policy set. Nil blocks are off.
//
// It is the one place where defaults are applied: every value in it is
// final (a RateLimit's Burst is never 0, for instance), so consumers use
// it as it is and never default anything again.
type Effective struct {
	Timeout           Duration        `json:"timeout"`
	StreamIdleTimeout Duration        `json:"stream_idle_timeout"`
	Retry             *Retry          `json:"retry"`
	CircuitBreaker    *CircuitBreaker `json:"circuit_breaker"`
	// SharedBreaker is true when CircuitBreaker is the upstream's, shared
	// by every route to it.
	SharedBreaker bool       `json:"shared_breaker,omitempty"`
	Bulkhead      *Bulkhead  `json:"bulkhead"`
	RateLimit     *RateLimit `json:"rate_limit"`
	Hedge         *Hedge     `json:"hedge"`
	Cache         *Cache     `json:"cache"`
	Fallback      *Fallback  `json:"fallback"`
	Errors        string     `json:"errors"`
	// ClientAuth is required, optional or none (the default).
	ClientAuth string `json:"client_auth"`
	// ForwardClientID names the header that carries the client's id
	// upstream; "" sends none.
	ForwardClientID string `json:"forward_client_id,omitempty"`
	// Priority is high, normal (the default) or low; a client's tier may
	// raise it for its own requests.
	Priority string `json:"priority"`

	// DetectBody is how much of a JSON POST body is read to tell whether it
	// is a JSON-RPC request (SPEC "Details that tests rely on"):
	// retry.max_body when the route has retry with a max_body above 0, else
	// DefaultDetectBody. Derived, not a key, so /config does not show it.
	DetectBody Size `json:"-"`
}

// DefaultDetectBody is how much of a body JSON-RPC detection reads when no
// retry.max_body applies: on a route without retry (Effective.DetectBody),
// and, capped at server.max_body, on a request that matches no route.
const DefaultDetectBody Size = 1 << 20

// Retry re-sends failed attempts.
type Retry struct {
	// Attempts counts every attempt, the first included; 1 means no retry.
	Attempts      int        `yaml:"attempts" json:"attempts"`
	Backoff       Backoff    `yaml:"backoff" json:"backoff"`
	On            []string   `yaml:"on" json:"on"`
	Methods       []string   `yaml:"methods" json:"methods"`
	PerTryTimeout Duration   `yaml:"per_try_timeout" json:"per_try_timeout"` // 0 = none
	RetryAfter    RetryAfter `yaml:"retry_after" json:"retry_after"`
	Budget        Budget     `yaml:"budget" json:"budget"`
	// MaxBody: request bodies up to this size are buffered for replay;
	// larger ones are streamed and sent once.
	MaxBody Size `yaml:"max_body" json:"max_body"`
	// Tools is all (tools/call follows methods, like any request) or
	// annotated: a tools/call POST is retried only for a tool its
	// upstream's tools/list marked readOnlyHint or idempotentHint, whatever
	// methods says, and sent once otherwise.
	Tools string `yaml:"tools" json:"tools"`

	block
}

// Backoff is exponential with jitter.
type Backoff struct {
	Initial    Duration `yaml:"initial" json:"initial"`
	Max        Duration `yaml:"max" json:"max"`
	Multiplier float64  `yaml:"multiplier" json:"multiplier"`
	Jitter     float64  `yaml:"jitter" json:"jitter"` // a fraction: 0.25 = ±25%

	fields
}

// RetryAfter governs how an upstream's Retry-After is honoured between attempts.
type RetryAfter struct {
	Honor bool     `yaml:"honor" json:"honor"`
	Max   Duration `yaml:"max" json:"max"`

	fields
}

// Budget caps the share of in-flight attempts that are retries or hedges.
type Budget struct {
	Ratio         float64 `yaml:"ratio" json:"ratio"`
	MinConcurrent int     `yaml:"min_concurrent" json:"min_concurrent"`

	fields
}

// CircuitBreaker stops calling an upstream that keeps failing. It is
// count-based when FailureThreshold > 0, time-based otherwise.
type CircuitBreaker struct {
	FailureThreshold int      `yaml:"failure_threshold" json:"failure_threshold,omitempty"`
	FailureRate      Percent  `yaml:"failure_rate" json:"failure_rate,omitempty"`
	MinRequests      int      `yaml:"min_requests" json:"min_requests,omitempty"`
	Window           Duration `yaml:"window" json:"window,omitempty"`
	Delay            Duration `yaml:"delay" json:"delay"`
	HalfOpenRequests int      `yaml:"half_open_requests" json:"half_open_requests"`
	SuccessThreshold int      `yaml:"success_threshold" json:"success_threshold"`
	On               []string `yaml:"on" json:"on"`

	block
}

// Bulkhead caps concurrent requests on a route; an upstream's
// Concurrency is the same block, one set of slots for all its routes.
type Bulkhead struct {
	MaxConcurrent int `yaml:"max_concurrent" json:"max_concurrent"`
	// MaxQueue bounds the callers waiting for a slot; one beyond it is
	// turned away at once. 0 = nobody waits.
	MaxQueue int      `yaml:"max_queue" json:"max_queue"`
	MaxWait  Duration `yaml:"max_wait" json:"max_wait"` // 0 = reject at once

	block
}

// RateLimit limits the callers of a route (a token bucket per key).
type RateLimit struct {
	// Rate is one window; Rates several, all of which must admit a
	// request (see Windows). A block sets one or the other.
	Rate  Rate   `yaml:"rate" json:"rate"`
	Rates []Rate `yaml:"rates" json:"rates,omitempty"`
	// Burst is the bucket size. A file's 0 means one period's worth
	// (Rate.N); in Effective it is resolved, so never below 1.
	Burst   int      `yaml:"burst" json:"burst"`
	Key     string   `yaml:"key" json:"key"`           // none | client_ip | header:NAME | client
	MaxWait Duration `yaml:"max_wait" json:"max_wait"` // 0 = reject at once
	// Shared makes the buckets one per route and key for every replica,
	// on the store; false keeps them in this process.
	Shared bool `yaml:"shared" json:"shared,omitempty"`

	block
}

// Hedge sends extra attempts when the first is slow (GET/HEAD only).
type Hedge struct {
	Delay Duration `yaml:"delay" json:"delay"`
	Max   int      `yaml:"max" json:"max"`

	block
}

// Cache keeps GET/HEAD 2xx responses.
type Cache struct {
	TTL          Duration `yaml:"ttl" json:"ttl"`
	StaleIfError Duration `yaml:"stale_if_error" json:"stale_if_error"`
	MaxEntrySize Size     `yaml:"max_entry_size" json:"max_entry_size"`
	MaxSize      Size     `yaml:"max_size" json:"max_size"`
	Vary         []string `yaml:"vary" json:"vary"`
	// Shared keeps entries on the store (with a small local copy in
	// front), so a replica answers what another fetched; false keeps
	// them in this process.
	Shared bool `yaml:"shared" json:"shared,omitempty"`
	// PerClient, on a route with client_auth, keys entries on the caller's
	// identity (the client id, or anonymous), so that one client's answer
	// is never served to another. false (set explicitly: the default is
	// true) shares one entry among every identified caller, anonymous
	// callers keeping their own; validate warns about it. Without
	// client_auth there is no identity and it changes nothing.
	PerClient bool `yaml:"per_client" json:"per_client"`

	block
}

// Fallback is a static answer given when everything else failed.
type Fallback struct {
	Status      int    `yaml:"status" json:"status"`
	ContentType string `yaml:"content_type" json:"content_type"`
	Body        string `yaml:"body" json:"body"`

	block
}

// block is embedded by every policy block that can be inherited or turned off.
type block struct {
	// Off is set by `retry: off` / `retry: false`.
	Off bool `yaml:"-" json:"-"`
	fields
}

// fields records which YAML keys a struct set, so inheritance is per key.
type fields struct{ set map[string]bool }

func (f *fields) markSet(key string) {
	if f.set == nil {
		f.set = map[string]bool{}
	}
	f.set[key] = true
}

func (f *fields) keys() *fields { return f }

// IsSet reports whether the file set key in this block.
func (f *fields) IsSet(key string) bool { return f.set[key] }

func (b *block) turnOff() { b.Off = true }
