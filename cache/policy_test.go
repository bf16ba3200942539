package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// req builds a client request; header is name, value pairs.
func req(method, target string, header ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func TestKey(t *testing.T) {
	auth := Policy{Vary: []string{"authorization"}} // any case
	two := Policy{Vary: []string{"Authorization", "Accept-Language"}}
	client := Policy{HostFromClient: true}
	tests := []struct {
		name   string
		p      Policy
		routeA string
		a      *http.Request
		routeB string
		b      *http.Request
		same   bool
	}{
		{"identical", Policy{}, "r", req("GET", "http://h/p?q=1"), "r", req("GET", "http://h/p?q=1"), true},
		{"HEAD shares GET's entry", Policy{}, "r", req("GET", "http://h/p"), "r", req("HEAD", "http://h/p"), true},
		{"POST is its own class", Policy{}, "r", req("GET", "http://h/p"), "r", req("POST", "http://h/p"), false},
		{"query is part of the key", Policy{}, "r", req("GET", "http://h/p?q=1"), "r", req("GET", "http://h/p?q=2"), false},
		{"no query vs empty query", Policy{}, "r", req("GET", "http://h/p"), "r", req("GET", "http://h/p?"), true},
		{"query order is kept", Policy{}, "r", req("GET", "http://h/p?a=1&b=2"), "r", req("GET", "http://h/p?b=2&a=1"), false},
		{"path", Policy{}, "r", req("GET", "http://h/p"), "r", req("GET", "http://h/q"), false},
		{"escaped slash is not a slash", Policy{}, "r", req("GET", "http://h/a%2Fb"), "r", req("GET", "http://h/a/b"), false},
		{"host the upstream never sees", Policy{}, "r", req("GET", "http://127.0.0.1:8080/p"), "r", req("GET", "http://localhost:8081/p"), true},
		{"host sent upstream", client, "r", req("GET", "http://h1/p"), "r", req("GET", "http://h2/p"), false},
		{"host case", client, "r", req("GET", "http://Example.COM/p"), "r", req("GET", "http://example.com/p"), true},
		{"route prefix", Policy{}, "r1", req("GET", "http://h/p"), "r2", req("GET", "http://h/p"), false},
		{"fields cannot bleed into each other", Policy{}, "r|", req("GET", "http://h/p"), "r", req("GET", "http://h/p"), false},
		{"unvaried header ignored", Policy{}, "r", req("GET", "http://h/p", "Authorization", "a"), "r", req("GET", "http://h/p", "Authorization", "b"), true},
		{"vary: different Authorization", auth, "r", req("GET", "http://h/p", "Authorization", "Bearer a"), "r", req("GET", "http://h/p", "Authorization", "Bearer b"), false},
		{"vary: same Authorization", auth, "r", req("GET", "http://h/p", "Authorization", "Bearer a"), "r", req("HEAD", "http://h/p", "Authorization", "Bearer a"), true},
		{"vary: absent vs empty", auth, "r", req("GET", "http://h/p"), "r", req("GET", "http://h/p", "Authorization", ""), false},
		{"vary: one joined value vs two", auth, "r", req("GET", "http://h/p", "Authorization", "a,b"), "r", req("GET", "http://h/p", "Authorization", "a", "Authorization", "b"), false},
		{"vary: other header still ignored", auth, "r", req("GET", "http://h/p", "Accept-Language", "en"), "r", req("GET", "http://h/p", "Accept-Language", "fr"), true},
		{"vary: second header counts", two, "r", req("GET", "http://h/p", "Authorization", "a", "Accept-Language", "en"), "r", req("GET", "http://h/p", "Authorization", "a", "Accept-Language", "fr"), false},
		{"vary: values do not move between headers", two, "r", req("GET", "http://h/p", "Authorization", "x"), "r", req("GET", "http://h/p", "Accept-Language", "x"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := tt.p.Key(tt.routeA, "", tt.a), tt.p.Key(tt.routeB, "", tt.b)
			if (ka == kb) != tt.same {
				t.Fatalf("same = %v, want %v\n a: %s\n b: %s", ka == kb, tt.same, ka, kb)
			}
		})
	}
}

// On a route with client identity, the caller is part of the key whatever
// Vary says: the key header is gone from the request by the time the key
// is made, so every client's request looks alike otherwise.
func TestKeyCaller(t *testing.T) {
	perClient := Policy{Vary: []string{"Authorization"}}
	shared := Policy{ShareClients: true}
	r := req("GET", "http://h/p?x=1")
	key := func(p Policy, caller string) string { return p.Key("r", caller, r) }
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"two clients", key(perClient, perClient.Caller("alice")), key(perClient, perClient.Caller("bob")), false},
		{"one client", key(perClient, perClient.Caller("alice")), key(perClient, perClient.Caller("alice")), true},
		{"client vs anonymous", key(perClient, perClient.Caller("alice")), key(perClient, perClient.Caller("")), false},
		{"a client named anonymous", key(perClient, perClient.Caller("anonymous")), key(perClient, perClient.Caller("")), false},
		{"a client named client", key(shared, perClient.Caller("client")), key(shared, shared.Caller("bob")), false},
		{"anonymous vs no identity", key(perClient, perClient.Caller("")), key(perClient, ""), false},
		{"client vs no identity", key(perClient, perClient.Caller("alice")), key(perClient, ""), false},
		{"per_client false: two clients", key(shared, shared.Caller("alice")), key(shared, shared.Caller("bob")), true},
		{"per_client false: anonymous apart", key(shared, shared.Caller("alice")), key(shared, shared.Caller("")), false},
		{"caller cannot bleed into the path", Policy{}.Key("r", "x", req("GET", "http://h/p")), Policy{}.Key("r", "", req("GET", "http://h/xp")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.a == tt.b) != tt.same {
				t.Fatalf("same = %v, want %v\n a: %s\n b: %s", tt.a == tt.b, tt.same, tt.a, tt.b)
			}
		})
	}
}

func TestKeyHidesVaryValues(t *testing.T) {
	p := Policy{Vary: []string{"Authorization"}}
	k := p.Key("r", "", req("GET", "http://h/p", "Authorization", "Bearer s3cr3t-token"))
	if strings.Contains(k, "s3cr3t") {
		t.Fatalf("key holds the credential: %s", k)
	}
	if !strings.Contains(k, "Authorization") {
		t.Fatalf("key does not name its Vary headers: %s", k)
	}
}

func TestFreshness(t *testing.T) {
	stored := time.Unix(1_000_000, 0)
	e := &Entry{Stored: stored}
	p := Policy{TTL: 10 * time.Second, StaleIfError: 20 * time.Second}
	tests := []struct {
		name string
		p    Policy
		e    *Entry
		age  time.Duration
		want Freshness
	}{
		{"just stored", p, e, 0, Fresh},
		{"last instant of TTL", p, e, 10*time.Second - time.Nanosecond, Fresh},
		{"at TTL", p, e, 10 * time.Second, Stale},
		{"last instant of stale", p, e, 30*time.Second - time.Nanosecond, Stale},
		{"at TTL+StaleIfError", p, e, 30 * time.Second, Expired},
		{"long gone", p, e, time.Hour, Expired},
		{"stored in the future", p, e, -time.Minute, Fresh},
		{"no stale_if_error", Policy{TTL: 10 * time.Second}, e, 10 * time.Second, Expired},
		{"zero TTL is never fresh", Policy{StaleIfError: time.Second}, e, 0, Stale},
		{"zero Policy", Policy{}, e, 0, Expired},
		{"nil entry", p, nil, 0, Expired},
		{"huge durations do not overflow", Policy{TTL: 1 << 62, StaleIfError: 1 << 62}, e, 1<<62 + 1, Stale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Freshness(tt.e, stored.Add(tt.age)); got != tt.want {
				t.Fatalf("Freshness = %v, want %v", got, tt.want)
			}
		})
	}
	if Freshness(0) != Expired {
		t.Fatal("the zero Freshness must be Expired")
	}
}

func TestRequestRules(t *testing.T) {
	withBody := httptest.NewRequest("GET", "http://h/p", strings.NewReader("q"))
	tests := []struct {
		name          string
		r             *http.Request
		lookup, store bool
	}{
		{"GET", req("GET", "http://h/p"), true, true},
		{"HEAD looks up, never fills", req("HEAD", "http://h/p"), true, false},
		{"POST", req("POST", "http://h/p"), false, false},
		{"PUT", req("PUT", "http://h/p"), false, false},
		{"OPTIONS", req("OPTIONS", "http://h/p"), false, false},
		{"GET with a body", withBody, false, false},
		{"WebSocket upgrade", req("GET", "http://h/p", "Connection", "Upgrade", "Upgrade", "websocket"), false, false},
		{"no-cache bypasses the lookup", req("GET", "http://h/p", "Cache-Control", "no-cache"), false, true},
		{"No-Cache in any case, among others", req("GET", "http://h/p", "Cache-Control", "max-stale=5, No-Cache"), false, true},
		{"Pragma no-cache", req("GET", "http://h/p", "Pragma", "no-cache"), false, true},
		{"max-age=0", req("GET", "http://h/p", "Cache-Control", "max-age=0"), false, true},
		{"max-age quoted 0", req("GET", "http://h/p", "Cache-Control", `max-age="0"`), false, true},
		{"max-age=60 is ignored", req("GET", "http://h/p", "Cache-Control", "max-age=60"), true, true},
		{"no-store", req("GET", "http://h/p", "Cache-Control", "no-store"), true, false},
		{"no-cache and no-store", req("GET", "http://h/p", "Cache-Control", "no-cache", "Cache-Control", "no-store"), false, false},
		{"HEAD no-cache", req("HEAD", "http://h/p", "Cache-Control", "no-cache"), false, false},
		{"Range", req("GET", "http://h/p", "Range", "bytes=0-9"), true, false},
		{"If-None-Match", req("GET", "http://h/p", "If-None-Match", `"x"`), true, false},
		{"If-Modified-Since", req("GET", "http://h/p", "If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"), true, false},
		{"unrelated header", req("GET", "http://h/p", "Accept", "application/json"), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup, store := RequestRules(tt.r)
			if lookup != tt.lookup || store != tt.store {
				t.Fatalf("RequestRules = (%v, %v), want (%v, %v)", lookup, store, tt.lookup, tt.store)
			}
		})
	}
}

func TestPolicyRulesAuthorization(t *testing.T) {
	r := req("GET", "http://h/p", "Authorization", "Bearer a")
	if lookup, store := (Policy{}).Rules(r); lookup || store {
		t.Fatalf("Authorization not in Vary: Rules = (%v, %v), want (false, false)", lookup, store)
	}
	if lookup, store := (Policy{Vary: []string{"AUTHORIZATION"}}).Rules(r); !lookup || !store {
		t.Fatalf("Authorization in Vary: Rules = (%v, %v), want (true, true)", lookup, store)
	}
	if lookup, store := (Policy{}).Rules(req("GET", "http://h/p", "Cache-Control", "no-store")); !lookup || store {
		t.Fatalf("Rules must include RequestRules: got (%v, %v)", lookup, store)
	}
}

func TestStorable(t *testing.T) {
	resp := func(status int, header ...string) *http.Response {
		r := &http.Response{StatusCode: status, Header: http.Header{}, ContentLength: -1, Request: req("GET", "http://h/p")}
		for i := 0; i < len(header); i += 2 {
			r.Header.Add(header[i], header[i+1])
		}
		return r
	}
	with := func(r *http.Response, f func(*http.Response)) *http.Response { f(r); return r }
	p := Policy{Vary: []string{"Authorization"}, MaxEntrySize: 100}

	tests := []struct {
		name string
		resp *http.Response
		want bool
	}{
		{"200", resp(200), true},
		{"204", resp(204), true},
		{"203", resp(203), true},
		{"206 partial", resp(206), false},
		{"301", resp(301), false},
		{"304", resp(304), false},
		{"404", resp(404), false},
		{"500", resp(500), false},
		{"503", resp(503), false},
		{"no-store", resp(200, "Cache-Control", "no-store"), false},
		{"private", resp(200, "Cache-Control", "max-age=60, private"), false},
		{"private with fields", resp(200, "Cache-Control", `private="X-Id"`), false},
		{"no-cache", resp(200, "Cache-Control", "no-cache"), false},
		{"public max-age", resp(200, "Cache-Control", "public, max-age=60"), true},
		{"Set-Cookie", resp(200, "Set-Cookie", "a=b"), false},
		{"Vary: *", resp(200, "Vary", "*"), false},
		{"Vary: * among others", resp(200, "Vary", "Authorization, *"), false},
		{"Vary on a keyed header", resp(200, "Vary", "authorization"), true},
		{"Vary on an unkeyed header", resp(200, "Vary", "Accept-Language"), false},
		{"Vary split across fields", resp(200, "Vary", "Authorization", "Vary", "Cookie"), false},
		{"Vary: Accept-Encoding, request sent none", resp(200, "Vary", "Accept-Encoding"), true},
		{"Vary: Accept-Encoding, request sent one", with(resp(200, "Vary", "Accept-Encoding"), func(r *http.Response) {
			r.Request.Header.Set("Accept-Encoding", "gzip")
		}), false},
		{"event stream", resp(200, "Content-Type", "Text/Event-Stream; charset=utf-8"), false},
		{"trailers", with(resp(200), func(r *http.Response) { r.Trailer = http.Header{"X-Sum": nil} }), false},
		{"HEAD never fills", with(resp(200), func(r *http.Response) { r.Request = req("HEAD", "http://h/p") }), false},
		{"no request", with(resp(200), func(r *http.Response) { r.Request = nil }), true},
		{"Content-Length at max", with(resp(200), func(r *http.Response) { r.ContentLength = 100 }), true},
		{"Content-Length over max", with(resp(200), func(r *http.Response) { r.ContentLength = 101 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Storable(tt.resp); got != tt.want {
				t.Fatalf("Storable = %v, want %v (header %v)", got, tt.want, tt.resp.Header)
			}
		})
	}

	big := resp(200)
	big.ContentLength = 1 << 40
	if !(Policy{}).Storable(big) {
		t.Fatal("MaxEntrySize 0 must mean no limit of the policy's own")
	}
}

// BenchmarkKey measures the other half of a hit's cost: the key, with a
// Vary header to hash.
func BenchmarkKey(b *testing.B) {
	p := Policy{Vary: []string{"Authorization"}}
	r := req("GET", "http://api.example.com/v1/items/42?expand=owner", "Authorization", "Bearer abcdefghijklmnopqrstuvwxyz")
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Key("items", "", r)
	}
}
