package proxy

// Table tests for the data plane's pure helpers.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/policy"
)

func TestCleanPath(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/b/", "/a/b/"},
		{"/a//b", "/a/b"},
		{"//a", "/a"},
		{"/a//", "/a/"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/api/../admin", "/admin"},
		{"/api/../admin/", "/admin/"},
		{"/..", "/"},
		{"/../a", "/a"},
		{"/a/b/..", "/a"},
		{"/a/b/../", "/a/"},
		{"/a/.well-known/x", "/a/.well-known/x"},
		{"/a/..b/c", "/a/..b/c"},
	}
	for _, tc := range cases {
		if got := cleanPath(tc.in); got != tc.want {
			t.Errorf("cleanPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStripPrefix(t *testing.T) {
	cases := []struct{ path, prefix, want string }{
		{"/api/users", "/api", "/users"},
		{"/api/users", "/api/", "/users"},
		{"/api", "/api", "/"},
		{"/api/", "/api", "/"},
		{"/api/", "/api/", "/"},
		{"/apix", "/api", "/apix"}, // only at a segment boundary
		{"/apix/y", "/api", "/apix/y"},
		{"/other", "/api", "/other"},
		{"/API/users", "/api", "/API/users"}, // paths are case-sensitive
		{"/api/users", "", "/api/users"},
		{"/a/b/c", "/a/b", "/c"},
	}
	for _, tc := range cases {
		if got := stripPrefix(tc.path, tc.prefix); got != tc.want {
			t.Errorf("stripPrefix(%q, %q) = %q, want %q", tc.path, tc.prefix, got, tc.want)
		}
	}
}

func TestMatcher(t *testing.T) {
	cases := []struct {
		name   string
		match  config.Match
		method string
		host   string
		path   string
		header map[string]string
		want   bool
	}{
		{"empty matches all", config.Match{}, "GET", "x", "/any", nil, true},
		{"exact path", config.Match{Path: "/a"}, "GET", "", "/a", nil, true},
		{"exact path, longer", config.Match{Path: "/a"}, "GET", "", "/a/b", nil, false},
		{"prefix", config.Match{PathPrefix: "/api/"}, "GET", "", "/api/x", nil, true},
		{"prefix, shorter", config.Match{PathPrefix: "/api/"}, "GET", "", "/api", nil, false},
		{"method listed", config.Match{Methods: []string{"GET", "POST"}}, "POST", "", "/", nil, true},
		{"method not listed", config.Match{Methods: []string{"GET"}}, "DELETE", "", "/", nil, false},
		{"host, any case and port", config.Match{Host: "API.example.com"}, "GET", "api.EXAMPLE.com:8443", "/", nil, true},
		{"host differs", config.Match{Host: "api.example.com"}, "GET", "www.example.com", "/", nil, false},
		{"IPv6 host with port", config.Match{Host: "::1"}, "GET", "[::1]:80", "/", nil, true},
		{"header equal, name in any case", config.Match{Headers: map[string]string{"x-tenant": "acme"}}, "GET", "", "/", map[string]string{"X-Tenant": "acme"}, true},
		{"header value differs", config.Match{Headers: map[string]string{"X-Tenant": "acme"}}, "GET", "", "/", map[string]string{"X-Tenant": "Acme"}, false},
		{"header missing", config.Match{Headers: map[string]string{"X-Tenant": "acme"}}, "GET", "", "/", nil, false},
		{"every header must hold", config.Match{Headers: map[string]string{"A": "1", "B": "2"}}, "GET", "", "/", map[string]string{"A": "1"}, false},
	}
	for _, tc := range cases {
		r, _ := http.NewRequest(tc.method, "http://placeholder"+tc.path, nil)
		r.Host = tc.host
		for k, v := range tc.header {
			r.Header.Set(k, v)
		}
		m := newMatcher(tc.match)
		if got := m.match(r, tc.path); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSaneID(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"abc", true},
		{"0123456789abcdef0123456789abcdef", true},
		{"req-1.2_3:4+5/6=", true},
		{"a", true},
		{string(make([]byte, 128)), false}, // NULs
		{fmt.Sprintf("%0128d", 0), true},
		{fmt.Sprintf("%0129d", 0), false},
		{"", false},
		{"two words", false},
		{"tab\there", false},
		{"new\nline", false},
		{`"quoted"`, false},
		{"semi;colon", false},
		{"<script>", false},
		{"idé", false},
	}
	for _, tc := range cases {
		if got := saneID(tc.id); got != tc.want {
			t.Errorf("saneID(%.20q, len %d) = %v, want %v", tc.id, len(tc.id), got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	cases := []struct {
		name   string
		err    error
		kind   Kind
		status int
	}{
		{"body too large", errBodyTooLarge, KindBodyTooLarge, 413},
		{"body too large, wrapped", fmt.Errorf("write body: %w", errBodyTooLarge), KindBodyTooLarge, 413},
		{"rate limited", errRateLimited, KindRateLimited, 429},
		{"no route", errNoRoute, KindNoRoute, 404},
		{"circuit open", &policy.RejectedError{Err: policy.ErrCircuitOpen}, KindCircuitOpen, 503},
		{"bulkhead full", &policy.RejectedError{Err: policy.ErrBulkheadFull}, KindBulkheadFull, 503},
		{"quota exhausted", &policy.RejectedError{Err: policy.ErrQuotaExhausted}, KindQuotaExhausted, 503},
		{"route timeout", &policy.RejectedError{Err: policy.ErrTimeout}, KindTimeout, 504},
		{"per-try timeout", &policy.RejectedError{Err: policy.ErrAttemptTimeout}, KindTimeout, 504},
		{"client gone", context.Canceled, kindClientClosed, StatusClientClosed},
		{"client gone, wrapped", fmt.Errorf("proxy: %w", context.Canceled), kindClientClosed, StatusClientClosed},
		{"connection refused", refused, KindUpstreamUnreachable, 502},
		{"reset mid-response", io.ErrUnexpectedEOF, KindUpstreamUnreachable, 502},
		{"anything else", errors.New("tls: handshake failure"), KindUpstreamUnreachable, 502},
	}
	for _, tc := range cases {
		kind, status := classify(tc.err)
		if kind != tc.kind || status != tc.status {
			t.Errorf("%s: classify(%v) = %s %d, want %s %d", tc.name, tc.err, kind, status, tc.kind, tc.status)
		}
		if kind != kindClientClosed && (titles[kind] == "" || details[kind] == "") {
			t.Errorf("%s: kind %s has no title or detail", tc.name, kind)
		}
	}
}
