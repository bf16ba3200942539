package config

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Clients says where callers' API keys are kept and how they present them.
type Clients struct {
	// KeysFile holds the keys' SHA-256 hashes with id, tier and disabled
	// (the clients package reads it); "" means no client keys.
	KeysFile string `yaml:"keys_file" json:"keys_file,omitempty"`
	// Header carries the key: Authorization (the default) as "Bearer KEY",
	// any other header as the raw key.
	Header string `yaml:"header" json:"header,omitempty"`

	fields
}

// Tier is a class of clients with their own limits.
type Tier struct {
	// RateLimits are the tier's windows, per client; all must admit a
	// request. Empty means no rate limit.
	RateLimits []Rate `yaml:"rate_limits" json:"rate_limits"`
	// MaxConcurrent caps one client's requests in flight; 0 means no cap.
	MaxConcurrent int `yaml:"max_concurrent" json:"max_concurrent,omitempty"`
	// Priority is low, normal (the default) or high; the queues read it.
	Priority string `yaml:"priority" json:"priority"`

	fields
}

// MaxWindows bounds the windows of one rate limit: each is state kept per
// key, and real policies have two or three.
const MaxWindows = 8

// Window is one token bucket of a rate limit: Burst tokens, refilled at
// Rate. A window written N/DURATION in `rates` or a tier's `rate_limits`
// has Burst N (N tokens refilled at N per DURATION).
type Window struct {
	Rate  Rate `json:"rate"`
	Burst int  `json:"burst"`
}

// Windows lists a rate limit's windows: its Rates, or its single Rate with
// its Burst (which a validated config resolves, never below 1). A block
// with neither (key: client, which uses the tier's) has none.
func (r *RateLimit) Windows() []Window {
	if len(r.Rates) > 0 {
		return WindowsOf(r.Rates)
	}
	if r.Rate.IsZero() {
		return nil
	}
	return []Window{{Rate: r.Rate, Burst: max(r.Burst, 1)}}
}

// WindowsOf makes one window per rate, each with a burst of its N.
func WindowsOf(rates []Rate) []Window {
	ws := make([]Window, len(rates))
	for i, r := range rates {
		ws[i] = Window{Rate: r, Burst: r.N}
	}
	return ws
}

// rateModes: a rate_limit block that sets `rates` drops the `rate` and
// `burst` it would inherit, and one that sets `rate` drops `rates`.
var rateModes = map[string][]string{
	"rates": {"rate", "burst"},
	"rate":  {"rates"},
}

// DefaultClientHeader is where a client's key is read when clients.header
// is not set.
const DefaultClientHeader = "Authorization"

// resolveClient fills the route's client keys along its inheritance chain.
func resolveClient(e *Effective, chain []*Policies) {
	e.ClientAuth = "none" // anyone may call, as before Part 2
	if v := firstSet(chain, func(p *Policies) *string { return p.ClientAuth }); *v != "" {
		e.ClientAuth = *v
	}
	e.ForwardClientID = *firstSet(chain, func(p *Policies) *string { return p.ForwardClientID })
}

// clientsDefaults fills the clients block.
func clientsDefaults(c *Config) {
	setDefault(&c.Clients.fields, "header", &c.Clients.Header, DefaultClientHeader)
	for _, t := range c.Tiers {
		if t != nil {
			setDefault(&t.fields, "priority", &t.Priority, "normal")
		}
	}
}

// clients checks the clients and tiers blocks.
func (v *validator) clients() {
	c := v.c.Clients
	v.checkRegular("clients.keys_file", c.KeysFile)
	v.keysFileMode(c.KeysFile)
	if h := c.Header; !httpguts.ValidHeaderFieldName(h) {
		v.errorf("clients.header", "not a valid header name")
	} else if isHopByHop(h) {
		v.errorf("clients.header", "a hop-by-hop header cannot carry the key")
	}
	for _, name := range slices.Sorted(maps.Keys(v.c.Tiers)) {
		t, path := v.c.Tiers[name], "tiers."+name
		if t == nil {
			v.errorf(path, "empty tier: give it rate_limits or max_concurrent")
			continue
		}
		if !validToken(name) {
			v.errorf(path, "a tier name is a label: letters, digits, - and _ only")
		}
		v.windows(path+".rate_limits", t.RateLimits)
		if t.MaxConcurrent < 0 {
			v.errorf(path+".max_concurrent", "must not be negative (0 = no cap)")
		}
		switch t.Priority {
		case "low", "normal", "high":
		default:
			v.errorf(path+".priority", "want low, normal or high, got %q", t.Priority)
		}
	}
}

// windows checks a list of rate-limit windows.
func (v *validator) windows(path string, rates []Rate) {
	if len(rates) > MaxWindows {
		v.errorf(path, "at most %d windows", MaxWindows)
	}
	seen := map[time.Duration]int{}
	for i, r := range rates {
		if j, dup := seen[r.Period]; dup && r.Period > 0 {
			v.errorf(fmt.Sprintf("%s[%d]", path, i), "a second window of %s (the first is %s[%d]): windows are named by their length, so each needs its own", r.Period, path, j)
		}
		seen[r.Period] = i
	}
}

// clientPolicies checks the client keys a policy block sets.
func (v *validator) clientPolicies(path string, p *Policies) {
	if a := p.ClientAuth; a != nil {
		switch *a {
		case "required", "optional", "none":
		default:
			v.errorf(path+".client_auth", "want required, optional or none, got %q", *a)
		}
	}
	if f := p.ForwardClientID; f != nil && *f != "" {
		if !httpguts.ValidHeaderFieldName(*f) {
			v.errorf(path+".forward_client_id", "not a valid header name")
		} else if isHopByHop(*f) {
			v.errorf(path+".forward_client_id", "hop-by-hop headers cannot be set")
		}
	}
	if rl := p.RateLimit; rl != nil && !rl.Off {
		if rl.IsSet("rates") {
			if rl.IsSet("rate") {
				v.errorf(path+".rate_limit.rates", "set rate (one window) or rates (several), not both")
			}
			if rl.IsSet("burst") {
				v.errorf(path+".rate_limit.burst", "burst goes with rate: each window in rates holds N tokens")
			}
			v.windows(path+".rate_limit.rates", rl.Rates)
		}
	}
}

// clientEffective checks a route's resolved client settings.
func (v *validator) clientEffective(path string, r *Route) {
	e := r.Effective
	if e.ClientAuth != "none" && v.c.Clients.KeysFile == "" {
		v.errorf(path+".client_auth", "client_auth: %s needs clients.keys_file", e.ClientAuth)
	}
	if e.ForwardClientID != "" && e.ClientAuth == "none" {
		v.warnf(path+".forward_client_id", "the route has client_auth: none, so no client id is ever known to forward")
	}
	if e.ForwardClientID != "" && strings.EqualFold(e.ForwardClientID, v.c.Clients.Header) {
		v.errorf(path+".forward_client_id", "%s carries the client's key; forward the id in another header", http.CanonicalHeaderKey(e.ForwardClientID))
	}
	if rl := e.RateLimit; rl != nil && rl.Key == "client" {
		if e.ClientAuth == "none" {
			v.errorf(path+".rate_limit.key", "key: client needs client_auth: required or optional on the route")
		}
		if len(v.c.Tiers) == 0 {
			v.errorf(path+".rate_limit.key", "key: client uses the tiers' rate_limits, and no tiers are defined")
		}
	}
}
