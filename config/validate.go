package config

import (
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// validator collects every problem with its line.
type validator struct {
	c        *Config
	problems []Problem
}

func (v *validator) errorf(path, format string, args ...any) {
	v.problems = append(v.problems, newProblem(v.c.File, v.c.Line(path), path, false, format, args...))
}

func (v *validator) warnf(path, format string, args ...any) {
	v.problems = append(v.problems, newProblem(v.c.File, v.c.Line(path), path, true, format, args...))
}

// validate checks a defaulted config; it returns every error and warning,
// ordered by line.
func validate(c *Config) []Problem {
	v := &validator{c: c}
	if c.Version != 1 {
		v.errorf("version", "unsupported version %d (this breakwater reads version 1)", c.Version)
	}
	v.listenAddr("listen", c.Listen)
	v.admin()
	v.server()
	v.clients()
	v.mcp()
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errorf("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		v.errorf("log.format", "want json or console, got %q", c.Log.Format)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
		v.upstream("upstreams."+name, c.Upstreams[name])
	}
	v.policies("defaults", &c.Defaults)
	v.store()
	if len(c.Routes) == 0 {
		v.errorf("routes", "at least one route is needed")
	}
	seen := map[string]int{}
	for i, r := range c.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		if r == nil {
			v.errorf(path, "empty route")
			continue
		}
		if r.Name == "" {
			v.errorf(path+".name", "every route needs a name (it labels metrics and logs)")
		} else if j, dup := seen[r.Name]; dup {
			// The index goes into the format: only arguments are redacted.
			v.errorf(path+".name", "route name %q is already used by "+fmt.Sprintf("routes[%d]", j), r.Name)
		} else {
			seen[r.Name] = i
		}
		v.route(path, r)
	}
	// A route breaker is named after its route, a shared one after its
	// upstream: the same name for both would make /breakers/{name} ambiguous.
	shared := map[string]bool{}
	for _, r := range c.Routes {
		if r != nil && r.Effective.CircuitBreaker != nil && r.Effective.SharedBreaker {
			shared[r.Upstream] = true
		}
	}
	for i, r := range c.Routes {
		if r != nil && r.Effective.CircuitBreaker != nil && !r.Effective.SharedBreaker && shared[r.Name] {
			v.errorf(fmt.Sprintf("routes[%d].name", i), "route %q has its own circuit breaker and upstream %q has a shared one: breakers are named after them, so rename the route", r.Name, r.Name)
		}
	}
	sort.SliceStable(v.problems, func(i, j int) bool { return v.problems[i].Line < v.problems[j].Line })
	return v.problems
}

func (v *validator) listenAddr(path, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil {
		v.errorf(path, "want host:port, got %q", addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errorf(path, "bad port %q", port)
	}
}

// IsLoopback reports whether addr — a listen address, a listener's
// address or a request's Host, with or without a port — names loopback
// only: 127.0.0.0/8, ::1 (an IPv4-mapped form too) or localhost (in any
// case, with or without the root's trailing dot). ":9901" binds every
// interface, so it is not. The one loopback test: validation, the admin
// guard's Host check and its bound-address rules all use it.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (v *validator) admin() {
	a := v.c.Admin
	v.listenAddr("admin.listen", a.Listen)
	if a.Listen == v.c.Listen {
		v.errorf("admin.listen", "the admin listener must not share the data port %s", a.Listen)
	}
	if !IsLoopback(a.Listen) && !a.AllowRemote {
		v.errorf("admin.listen", "%s is not loopback: set admin.allow_remote: true (and admin.token) to expose the admin API", a.Listen)
	}
	// SPEC: the token is "required with allow_remote", whatever the address
	// (a -admin flag may move a loopback listener elsewhere).
	if a.AllowRemote && a.Token.IsZero() {
		v.errorf("admin.token", "a token is required when admin.allow_remote is true")
	}
}

func (v *validator) server() {
	s := v.c.Server
	if s.MaxHeaderBytes < 1024 {
		v.errorf("server.max_header_bytes", "must be at least 1KiB")
	}
	if s.ReadHeaderTimeout <= 0 {
		v.errorf("server.read_header_timeout", "must be above 0 (it is the slowloris guard)")
	}
	if s.BodyIdleTimeout <= 0 {
		v.errorf("server.body_idle_timeout", "must be above 0 (it is the stalled-upload guard)")
	}
	for i, cidr := range s.TrustedProxies {
		if _, _, err := net.ParseCIDR(cidr); err != nil && net.ParseIP(cidr) == nil {
			v.errorf(fmt.Sprintf("server.trusted_proxies[%d]", i), "want a CIDR such as 10.0.0.0/8, got %q", cidr)
		}
	}
}

func (v *validator) upstream(path string, u *Upstream) {
	p, err := url.Parse(u.URL)
	switch {
	case u.URL == "":
		v.errorf(path+".url", "an upstream needs a url")
	case err != nil || p.Host == "":
		v.errorf(path+".url", "want an absolute http:// or https:// URL")
	case p.Scheme != "http" && p.Scheme != "https":
		v.errorf(path+".url", "scheme must be http or https, got %q", p.Scheme)
	case p.User != nil:
		v.errorf(path+".url", "credentials in the URL are not supported: use headers.set")
	case p.RawQuery != "" || p.Fragment != "":
		v.errorf(path+".url", "the upstream URL must not have a query or fragment")
	}
	switch {
	case u.Transport != "fast" && u.Transport != "standard":
		v.errorf(path+".transport", "want fast or standard, got %q", u.Transport)
	case u.Transport == "fast" && err == nil && p.Scheme == "https":
		v.errorf(path+".transport", "fast is HTTP/1.1 over plain http:// only; an https upstream uses standard")
	}
	if u.HostHeader != "upstream" && u.HostHeader != "client" {
		v.errorf(path+".host_header", "want upstream or client, got %q", u.HostHeader)
	}
	if f := u.TLS.CAFile; f != "" {
		if pem, err := ReadRegular(f, maxPEMSize); err != nil {
			// A regular file only: a named pipe would hang validate and a reload.
			v.errorf(path+".tls.ca_file", "cannot read: %v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.errorf(path+".tls.ca_file", "no PEM certificates in %s", f)
		}
	}
	if u.MaxConns < 0 {
		v.errorf(path+".max_conns", "must not be negative (0 = no limit)")
	}
	if u.MaxIdleConns < 0 {
		v.errorf(path+".max_idle_conns", "must not be negative")
	}
	for name := range u.Headers.Set {
		if !httpguts.ValidHeaderFieldName(name) {
			v.errorf(path+".headers.set."+name, "not a valid header name")
		} else if isHopByHop(name) {
			v.errorf(path+".headers.set."+name, "hop-by-hop headers cannot be set")
		}
	}
	for i, name := range u.Headers.Remove {
		if !httpguts.ValidHeaderFieldName(name) {
			v.errorf(fmt.Sprintf("%s.headers.remove[%d]", path, i), "not a valid header name")
		}
	}
	v.auth(path, u.Auth)
	v.healthCheck(path, u.HealthCheck)
	if q := u.Quota; q != nil {
		qp := path + ".quota"
		if q.Rate.IsZero() {
			v.errorf(qp+".rate", "a quota needs a rate such as 100/1m")
		}
		if q.Burst < 1 {
			v.errorf(qp+".burst", "must be at least 1")
		}
	}
	v.concurrency(path, u)
	v.policies(path, &u.Policies)
}

var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func isHopByHop(name string) bool {
	for _, h := range hopByHop {
		if http.CanonicalHeaderKey(name) == h {
			return true
		}
	}
	return false
}

func (v *validator) route(path string, r *Route) {
	m := r.Match
	if _, ok := v.c.Upstreams[r.Upstream]; !ok {
		if r.Upstream == "" {
			v.errorf(path+".upstream", "every route needs an upstream")
		} else {
			v.errorf(path+".upstream", "no upstream named %q", r.Upstream)
		}
	}
	if m.Path != "" && m.PathPrefix != "" {
		v.errorf(path+".match", "set path or path_prefix, not both")
	}
	if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
		v.errorf(path+".match.path", "must start with /")
	}
	if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
		v.errorf(path+".match.path_prefix", "must start with /")
	}
	for i, meth := range m.Methods {
		if !validToken(meth) || strings.ToUpper(meth) != meth {
			v.errorf(fmt.Sprintf("%s.match.methods[%d]", path, i), "want an upper-case HTTP method, got %q", meth)
		}
	}
	for name := range m.Headers {
		if !httpguts.ValidHeaderFieldName(name) {
			v.errorf(path+".match.headers."+name, "not a valid header name")
		}
	}
	v.rpcMatch(path+".match", m)
	if r.StripPrefix != "" {
		if !strings.HasPrefix(r.StripPrefix, "/") {
			v.errorf(path+".strip_prefix", "must start with /")
		} else if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, r.StripPrefix) && !strings.HasPrefix(r.StripPrefix, strings.TrimSuffix(m.PathPrefix, "/")) {
			v.warnf(path+".strip_prefix", "%q is not a prefix of match.path_prefix %q: it will rarely apply", r.StripPrefix, m.PathPrefix)
		}
	}
	v.policies(path, &r.Policies)
	v.effective(path, r)
	v.clientEffective(path, r)
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !httpguts.IsTokenRune(c) {
			return false
		}
	}
	return true
}

// policies checks the keys a block sets, where it sets them.
func (v *validator) policies(path string, p *Policies) {
	v.clientPolicies(path, p)
	v.queuePolicies(path, p)
	if p.Timeout != nil && *p.Timeout <= 0 {
		v.errorf(path+".timeout", "must be above 0")
	}
	if p.Errors != nil {
		switch *p.Errors {
		case "auto", "problem", "jsonrpc":
		default:
			v.errorf(path+".errors", "want auto, problem or jsonrpc, got %q", *p.Errors)
		}
	}
	if r := p.Retry; r != nil && !r.Off {
		rp := path + ".retry"
		if r.IsSet("attempts") && (r.Attempts < 1 || r.Attempts > 10) {
			v.errorf(rp+".attempts", "want 1 to 10 (1 = no retry), got %d", r.Attempts)
		}
		b := r.Backoff
		if b.IsSet("multiplier") && b.Multiplier < 1 {
			v.errorf(rp+".backoff.multiplier", "must be at least 1")
		}
		if b.IsSet("jitter") && (b.Jitter < 0 || b.Jitter >= 1) {
			v.errorf(rp+".backoff.jitter", "want a fraction from 0 to below 1, got %g", b.Jitter)
		}
		if b.IsSet("initial") && b.IsSet("max") && b.Max < b.Initial {
			v.errorf(rp+".backoff.max", "must be at least backoff.initial")
		}
		v.conditions(rp+".on", r.On, true)
		if r.IsSet("tools") && r.Tools != "all" && r.Tools != "annotated" {
			v.errorf(rp+".tools", "want all or annotated, got %q", r.Tools)
		}
		for i, m := range r.Methods {
			if !validToken(m) || strings.ToUpper(m) != m {
				v.errorf(fmt.Sprintf("%s.methods[%d]", rp, i), "want an upper-case HTTP method, got %q", m)
			}
		}
		if bu := r.Budget; bu.IsSet("ratio") && (bu.Ratio <= 0 || bu.Ratio > 1) {
			v.errorf(rp+".budget.ratio", "want a fraction above 0 and at most 1, got %g", bu.Ratio)
		}
		if bu := r.Budget; bu.IsSet("min_concurrent") && bu.MinConcurrent < 0 {
			v.errorf(rp+".budget.min_concurrent", "must not be negative")
		}
	}
	if cb := p.CircuitBreaker; cb != nil && !cb.Off {
		cp := path + ".circuit_breaker"
		if cb.IsSet("failure_threshold") && (cb.IsSet("failure_rate") || cb.IsSet("min_requests") || cb.IsSet("window")) {
			v.errorf(cp, "set failure_threshold (count-based) or failure_rate/min_requests/window (time-based), not both")
		}
		if cb.IsSet("failure_threshold") && cb.FailureThreshold < 1 {
			v.errorf(cp+".failure_threshold", "must be at least 1")
		}
		if cb.IsSet("min_requests") && cb.MinRequests < 1 {
			v.errorf(cp+".min_requests", "must be at least 1")
		}
		if cb.IsSet("window") && cb.Window <= 0 {
			v.errorf(cp+".window", "must be above 0")
		}
		if cb.IsSet("delay") && cb.Delay <= 0 {
			v.errorf(cp+".delay", "must be above 0")
		}
		if cb.IsSet("half_open_requests") && cb.HalfOpenRequests < 1 {
			v.errorf(cp+".half_open_requests", "must be at least 1")
		}
		if cb.IsSet("success_threshold") && cb.SuccessThreshold < 1 {
			v.errorf(cp+".success_threshold", "must be at least 1")
		}
		v.conditions(cp+".on", cb.On, false)
	}
	if b := p.Bulkhead; b != nil && !b.Off {
		if b.IsSet("max_concurrent") && b.MaxConcurrent < 1 {
			v.errorf(path+".bulkhead.max_concurrent", "must be at least 1")
		}
	}
	if rl := p.RateLimit; rl != nil && !rl.Off {
		lp := path + ".rate_limit"
		if rl.IsSet("burst") && rl.Burst < 0 {
			v.errorf(lp+".burst", "must not be negative")
		}
		if rl.IsSet("key") && rl.Key != "none" && rl.Key != "client_ip" && rl.Key != "client" &&
			!(strings.HasPrefix(rl.Key, "header:") && httpguts.ValidHeaderFieldName(strings.TrimPrefix(rl.Key, "header:"))) {
			v.errorf(lp+".key", "want none, client_ip, client or header:NAME, got %q", rl.Key)
		}
	}
	if h := p.Hedge; h != nil && !h.Off {
		if h.IsSet("delay") && h.Delay <= 0 {
			v.errorf(path+".hedge.delay", "must be above 0")
		}
		if h.IsSet("max") && (h.Max < 1 || h.Max > 5) {
			v.errorf(path+".hedge.max", "want 1 to 5, got %d", h.Max)
		}
	}
	if c := p.Cache; c != nil && !c.Off {
		if c.IsSet("ttl") && c.TTL <= 0 {
			v.errorf(path+".cache.ttl", "must be above 0")
		}
		if c.IsSet("max_entry_size") && c.MaxEntrySize <= 0 {
			v.errorf(path+".cache.max_entry_size", "must be above 0")
		}
		for i, h := range c.Vary {
			if !httpguts.ValidHeaderFieldName(h) {
				v.errorf(fmt.Sprintf("%s.cache.vary[%d]", path, i), "not a valid header name")
			}
		}
	}
	if f := p.Fallback; f != nil && !f.Off {
		if f.IsSet("status") && (f.Status < 200 || f.Status > 599) {
			v.errorf(path+".fallback.status", "want a status from 200 to 599, got %d", f.Status)
		}
	}
}

// conditions checks retry.on / circuit_breaker.on lists.
func (v *validator) conditions(path string, on []string, retry bool) {
	for i, c := range on {
		switch c {
		case "connect_error", "timeout", "5xx", "4xx":
			continue
		}
		if n, err := strconv.Atoi(c); err == nil && n >= 400 && n <= 599 {
			continue
		}
		v.errorf(fmt.Sprintf("%s[%d]", path, i), "want connect_error, timeout, 5xx, 4xx or a status from 400 to 599, got %q", c)
	}
}

// effective warns when a route's resolved numbers cannot work together.
func (v *validator) effective(path string, r *Route) {
	e := r.Effective
	total := e.Timeout.D()
	// A rate limit's rate may come from the upstream or defaults, so it is
	// checked once resolved (a decode error here was reported already).
	if e.RateLimit != nil && e.RateLimit.Rate.IsZero() && len(e.RateLimit.Rates) == 0 && e.RateLimit.Key != "client" {
		v.errorf(path+".rate_limit.rate", "a rate limit needs a rate such as 10/1s")
	}
	// Attempts above 10 are an error reported already; not looping over
	// them keeps a bogus attempts: 1e18 from hanging validation.
	if rt := e.Retry; rt != nil && rt.Attempts > 1 && rt.Attempts <= 10 && rt.PerTryTimeout > 0 {
		need := time.Duration(rt.Attempts) * rt.PerTryTimeout.D()
		wait := rt.Backoff.Initial.D()
		for i := 1; i < rt.Attempts; i++ {
			need += min(wait, rt.Backoff.Max.D())
			wait = time.Duration(float64(wait) * rt.Backoff.Multiplier)
		}
		if need > total {
			v.warnf(path+".retry", "attempts × per_try_timeout plus backoff (%s) exceeds the route timeout (%s): the last attempts cannot all run", need, total)
		}
	}
	if cb := e.CircuitBreaker; cb != nil && cb.FailureThreshold == 0 && e.Retry != nil && e.Retry.PerTryTimeout > 0 && cb.Window.D() < 2*e.Retry.PerTryTimeout.D() {
		v.warnf(path+".circuit_breaker.window", "window %s is shorter than twice per_try_timeout (%s): it can hardly collect failures", cb.Window, e.Retry.PerTryTimeout)
	}
	if e.Hedge != nil && e.Hedge.Delay.D() >= total {
		v.warnf(path+".hedge.delay", "hedge delay %s is not below the route timeout %s: no hedge will ever be sent", e.Hedge.Delay, total)
	}
	if c := e.Cache; c != nil && c.MaxEntrySize > c.MaxSize {
		v.warnf(path+".cache.max_entry_size", "larger than cache.max_size: nothing that big can be kept")
	}
	if c := e.Cache; c != nil && !c.PerClient && e.ClientAuth != "none" {
		v.warnf(path+".cache.per_client", "false on a client_auth: %s route: one identified client's cached answer is served to every other", e.ClientAuth)
	}
	if u, ok := v.c.Upstreams[r.Upstream]; ok && u.Quota != nil && u.Quota.Rate.PerSecond() > 0 {
		if per := time.Duration(float64(time.Second) / u.Quota.Rate.PerSecond()); per > total {
			v.warnf(path+".timeout", "route timeout %s is shorter than one quota interval (%s) of upstream %s: callers will often get quota_exhausted", total, per, r.Upstream)
		}
	}
	if e.Fallback != nil && e.Fallback.Body == "" && e.Fallback.Status >= 200 && e.Fallback.Status < 300 {
		v.warnf(path+".fallback.body", "a 2xx fallback with an empty body hides failures from callers")
	}
}
