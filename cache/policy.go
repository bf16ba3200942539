package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Freshness says how an entry may be used.
type Freshness int

const (
	// Expired entries must not be served (the zero Freshness, so that a
	// forgotten classification is the safe one).
	Expired Freshness = iota
	// Stale entries may be served only when the upstream fails or is cut
	// off (stale_if_error).
	Stale
	// Fresh entries answer without going upstream.
	Fresh
)

// String returns "expired", "stale" or "fresh".
func (f Freshness) String() string {
	switch f {
	case Fresh:
		return "fresh"
	case Stale:
		return "stale"
	default:
		return "expired"
	}
}

// Policy holds one route's cache settings (config.Cache, minus max_size,
// which sizes the route's Store). The zero Policy keys nothing by header and
// finds every entry expired.
//
// Only the route's TTL decides freshness: the upstream's Cache-Control
// max-age, s-maxage, Expires and Age are not consulted, but its no-store,
// private and no-cache keep a response out of the cache (see Storable).
type Policy struct {
	// TTL is how long an entry is fresh; 0 means never.
	TTL time.Duration
	// StaleIfError is how long after TTL an entry may still be served when
	// the upstream fails; 0 means never.
	StaleIfError time.Duration
	// MaxEntrySize is the largest body kept, in bytes; 0 or less means no
	// limit of the policy's own (the store's maximum still applies).
	MaxEntrySize int64
	// Vary lists request headers whose values are part of the key, in any
	// case ("authorization" is Authorization). Nil means none.
	Vary []string
	// HostFromClient puts the request's Host in the key: set it when the
	// upstream receives the client's Host. False (the upstream gets its
	// own) leaves it out, so that replicas reached under different names
	// share entries.
	HostFromClient bool
	// ShareClients makes Caller give every identified client one identity
	// (cache.per_client: false). False keeps each client's entries apart.
	ShareClients bool
}

// Caller is the identity Key takes for a request on a route with client
// identity: id is the client's id, "" for an anonymous caller. Anonymous
// callers always share one identity of their own; identified callers each
// have theirs, or one among them all with ShareClients. The id is written
// as is (it is a name, not a credential), prefixed so that no id can pass
// for "anonymous" or for the shared identity.
func (p Policy) Caller(id string) string {
	switch {
	case id == "":
		return "anonymous"
	case p.ShareClients:
		return "client"
	}
	return "client:" + id
}

// Key is the cache key of r on route for caller. It is made of what the
// upstream receives, never of how the client reached breakwater:
//
//   - the route name, so that routes never share entries, even in a shared
//     store;
//   - the method class: GET and HEAD share entries (a HEAD is answered
//     from a GET's entry; RequestRules lets only GET fill);
//   - caller: "" on a route without client identity, else Caller's
//     answer, so that one client's answer is never served to another
//     whatever Vary says (the key header itself is gone from r by then);
//   - the host (lower-cased), only with HostFromClient: otherwise the
//     upstream gets its own Host whatever name the client used;
//   - the escaped path and the raw query, as the client sent them (the
//     route's rewriting depends on nothing else); query parameters are
//     not reordered;
//   - the values of the Policy's Vary headers: distinct values give
//     distinct keys, and an absent header differs from an empty one.
//
// The Vary values appear only as a SHA-256 digest, because they are often
// credentials (Authorization) and a key may end up in a log line or in a
// shared store. Call Key with the request as the client sent it, before any
// rewriting for the upstream.
func (p Policy) Key(route, caller string, r *http.Request) string {
	var host string
	if p.HostFromClient {
		host = r.Host
		if host == "" && r.URL != nil {
			host = r.URL.Host
		}
	}
	var path, query string
	if r.URL != nil {
		path, query = r.URL.EscapedPath(), r.URL.RawQuery
	}
	// Length-prefixed fields: a route name, a host or a path can hold any
	// separator we might pick, and "a|b" + "c" must not equal "a" + "b|c".
	// Every field is always there, empty or not, so that a key never
	// equals one of a different shape (a route that gained client_auth, or
	// an older breakwater's entry on a shared store). Built on the stack
	// when it fits: a lookup then allocates only the key string itself.
	var scratch [256]byte
	b := scratch[:0]
	if n := 128 + len(route) + len(caller) + len(host) + len(path) + len(query); n > len(scratch) {
		b = make([]byte, 0, n)
	}
	b = appendField(b, route)
	b = appendField(b, methodClass(r.Method))
	b = appendField(b, caller)
	b = appendField(b, strings.ToLower(host))
	b = appendField(b, path)
	b = appendField(b, query)
	if len(p.Vary) > 0 {
		b = append(b, "vary:"...)
		for i, name := range p.Vary {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, textproto.CanonicalMIMEHeaderKey(name)...)
		}
		b = append(b, '=')
		b = p.appendVaryDigest(b, r.Header)
	}
	return string(b)
}

// appendField appends s to b as "len:s|".
func appendField(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, '|')
}

// methodClass maps HEAD to GET, whose entries it shares.
func methodClass(method string) string {
	if method == http.MethodHead || method == "" {
		return http.MethodGet // "" is GET for a client request
	}
	return method
}

// appendVaryDigest appends to dst the hex digest of the values of the Vary
// headers in h: per header, its canonical name, whether it is present, and
// each value length-prefixed, so that absent, empty, "a,b" and ["a" "b"]
// all differ.
func (p Policy) appendVaryDigest(dst []byte, h http.Header) []byte {
	var scratch [256]byte // enough for most; append moves to the heap past it
	buf := scratch[:0]
	for _, name := range p.Vary {
		name = textproto.CanonicalMIMEHeaderKey(name)
		buf = appendField(buf, name)
		values, present := h[name]
		if !present {
			buf = append(buf, '-')
			continue
		}
		buf = append(buf, '+')
		buf = strconv.AppendInt(buf, int64(len(values)), 10)
		buf = append(buf, ' ') // without it, count 1 + "23:…" reads as count 12 + "3:…"
		for _, v := range values {
			buf = appendField(buf, v)
		}
	}
	sum := sha256.Sum256(buf)
	return hex.AppendEncode(dst, sum[:16]) // 128 bits: collisions stay out of reach
}

// varies reports whether the Policy keys on header name (canonical).
func (p Policy) varies(name string) bool {
	for _, v := range p.Vary {
		if textproto.CanonicalMIMEHeaderKey(v) == name {
			return true
		}
	}
	return false
}

// Freshness classifies e as of now: Fresh while its age is below TTL, Stale
// from TTL until TTL+StaleIfError, Expired after that. A nil e is Expired.
func (p Policy) Freshness(e *Entry, now time.Time) Freshness {
	if e == nil {
		return Expired
	}
	age := e.Age(now)
	switch {
	case age < p.TTL:
		return Fresh
	case age-p.TTL < p.StaleIfError: // not age < TTL+StaleIfError: that sum may overflow
		return Stale
	default:
		return Expired
	}
}

// RequestRules says what the cache may do for r, from the request alone:
// lookup means an entry may answer it, store means its response may be
// stored (if Storable also agrees).
//
//   - Only GET and HEAD are cacheable; only GET stores (a HEAD response has
//     no body to keep).
//   - A request with a body, or asking for an upgrade (WebSocket), is not
//     cacheable: the key does not cover the body, and an upgrade must reach
//     the upstream.
//   - Cache-Control no-cache or max-age=0, or Pragma: no-cache, bypass the
//     lookup; the fresh response may still be stored.
//   - Cache-Control no-store forbids storing; the lookup is still allowed,
//     as RFC 9111 §5.2.1.5 permits.
//   - Range and conditional requests (If-None-Match, If-Modified-Since) may
//     look up but do not store: their answer may be a 206 or 304, not the
//     whole representation, so such a request cannot fill an entry or lead
//     a coalesced miss.
//
// Other request directives (max-age above 0, min-fresh, only-if-cached) are
// ignored. Policy.Rules adds the rules that depend on the Policy.
func RequestRules(r *http.Request) (lookup, store bool) {
	switch r.Method {
	case http.MethodGet, "":
		store = true
	case http.MethodHead:
	default:
		return false, false
	}
	if r.ContentLength != 0 || r.Header.Get("Upgrade") != "" {
		return false, false
	}
	lookup = true
	if _, ok := directive(r.Header, "no-cache"); ok || hasToken(r.Header, "Pragma", "no-cache") {
		lookup = false
	}
	if arg, ok := directive(r.Header, "max-age"); ok {
		if n, err := strconv.Atoi(arg); err == nil && n <= 0 {
			lookup = false
		}
	}
	if _, ok := directive(r.Header, "no-store"); ok {
		store = false
	}
	for _, name := range []string{"Range", "If-None-Match", "If-Modified-Since"} {
		if _, ok := r.Header[name]; ok {
			store = false
		}
	}
	return lookup, store
}

// Rules is RequestRules plus the rules of this Policy: a request carrying
// Authorization is not cacheable at all unless Authorization is in Vary, so
// one client's answer is never served to another (RFC 9111 §3.5). Routes
// whose upstream credentials are added by breakwater itself (headers.set)
// are not affected: this looks at the client's request.
func (p Policy) Rules(r *http.Request) (lookup, store bool) {
	if _, ok := r.Header["Authorization"]; ok && !p.varies("Authorization") {
		return false, false
	}
	return RequestRules(r)
}

// Storable reports whether resp may be stored. resp.Request, when set, is
// the request sent upstream (as in ReverseProxy.ModifyResponse); a nil
// Request is taken as a GET without Accept-Encoding. A response is storable
// when all of these hold:
//
//   - the request was a GET, and the status is 2xx but not 206 (a partial
//     body is not the representation);
//   - Cache-Control has none of no-store, private (with or without field
//     names) or no-cache (we never revalidate);
//   - there is no Set-Cookie;
//   - every header named in Vary is one the Policy keys on, except
//     Accept-Encoding when the request sent none (the answer was then not
//     encoded for anyone); Vary: * never is;
//   - it is not an event stream (text/event-stream), which never ends, and
//     announces no trailers, which an Entry does not keep;
//   - a known Content-Length is not above MaxEntrySize (an unknown one is
//     enforced by Capture as the body streams).
func (p Policy) Storable(resp *http.Response) bool {
	if resp.StatusCode < 200 || resp.StatusCode > 299 || resp.StatusCode == http.StatusPartialContent {
		return false
	}
	req := resp.Request
	if req != nil && req.Method != http.MethodGet && req.Method != "" {
		return false
	}
	h := resp.Header
	for _, d := range []string{"no-store", "private", "no-cache"} {
		if _, ok := directive(h, d); ok {
			return false
		}
	}
	if _, ok := h["Set-Cookie"]; ok {
		return false
	}
	for _, field := range h.Values("Vary") {
		for name := range strings.SplitSeq(field, ",") {
			name = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
			switch {
			case name == "":
			case name == "*":
				return false
			case p.varies(name):
			case name == "Accept-Encoding" && (req == nil || len(req.Header.Values("Accept-Encoding")) == 0):
			default:
				return false
			}
		}
	}
	mediaType, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	if strings.EqualFold(strings.TrimSpace(mediaType), "text/event-stream") || len(resp.Trailer) > 0 {
		return false
	}
	if p.MaxEntrySize > 0 && resp.ContentLength > p.MaxEntrySize {
		return false
	}
	return true
}

// directive finds the Cache-Control directive name (case-insensitive) in h
// and returns its argument, unquoted ("" when it has none). Quoted arguments
// holding commas (private="a, b") are split wrongly, which only matters for
// the argument, never for the name.
func directive(h http.Header, name string) (arg string, ok bool) {
	for _, field := range h.Values("Cache-Control") {
		for part := range strings.SplitSeq(field, ",") {
			key, value, _ := strings.Cut(strings.TrimSpace(part), "=")
			if strings.EqualFold(strings.TrimSpace(key), name) {
				return strings.Trim(strings.TrimSpace(value), `"`), true
			}
		}
	}
	return "", false
}

// hasToken reports whether the comma-separated header field holds token
// (case-insensitive).
func hasToken(h http.Header, field, token string) bool {
	for _, v := range h.Values(field) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
