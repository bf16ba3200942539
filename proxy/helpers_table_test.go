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

	"github.com/breakwater-proxy/breakwater/auth"
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

// TestFailureKind is the one error mapping the request path uses:
// failureKind decides a failed request's kind from the pipeline's error,
// the client body's own failure and whether the client is still there;
// statuses gives the kind's status.
func TestFailureKind(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	cases := []struct {
		name       string
		err        error
		bodyErr    error
		clientGone bool
		kind       Kind
		status     int
	}{
		{"body too large", errBodyTooLarge, nil, false, KindBodyTooLarge, 413},
		{"body too large, wrapped", fmt.Errorf("write body: %w", errBodyTooLarge), nil, false, KindBodyTooLarge, 413},
		{"rate limited", errRateLimited, nil, false, KindRateLimited, 429},
		{"no route", errNoRoute, nil, false, KindNoRoute, 404},
		{"circuit open", &policy.RejectedError{Err: policy.ErrCircuitOpen}, nil, false, KindCircuitOpen, 503},
		{"bulkhead full", &policy.RejectedError{Err: policy.ErrBulkheadFull}, nil, false, KindBulkheadFull, 503},
		{"quota exhausted", &policy.RejectedError{Err: policy.ErrQuotaExhausted}, nil, false, KindQuotaExhausted, 503},
		{"route timeout", &policy.RejectedError{Err: policy.ErrTimeout}, nil, false, KindTimeout, 504},
		{"per-try timeout", &policy.RejectedError{Err: policy.ErrAttemptTimeout}, nil, false, KindTimeout, 504},
		{"no token", fmt.Errorf("token: %w", auth.ErrUnavailable), nil, false, KindUpstreamAuthFailed, 502},
		{"client gone", context.Canceled, nil, true, kindClientClosed, StatusClientClosed},
		{"client gone, wrapped", fmt.Errorf("proxy: %w", context.Canceled), nil, true, kindClientClosed, StatusClientClosed},
		// failsafe reports the route timeout as a bare cancellation: with
		// the client still here, it is a timeout, never an empty 200.
		{"cancelled, client here", context.Canceled, nil, false, KindTimeout, 504},
		{"connection refused", refused, nil, false, KindUpstreamUnreachable, 502},
		{"reset mid-response", io.ErrUnexpectedEOF, nil, false, KindUpstreamUnreachable, 502},
		{"anything else", errors.New("tls: handshake failure"), nil, false, KindUpstreamUnreachable, 502},
		// The client's body failing is the client's failure, whatever the
		// attempt made of it; its cancellation alone decides nothing.
		{"body stalled", io.ErrUnexpectedEOF, errBodyStalled, false, KindRequestTimeout, 408},
		{"body malformed", refused, errMalformedBody, false, KindBadRequest, 400},
		{"body too large mid-attempt", context.Canceled, errBodyTooLarge, false, KindBodyTooLarge, 413},
		{"body cancelled", refused, context.Canceled, false, KindUpstreamUnreachable, 502},
	}
	gone, leave := context.WithCancel(context.Background())
	leave()
	for _, tc := range cases {
		client := context.Background()
		if tc.clientGone {
			client = gone
		}
		kind := failureKind(tc.err, tc.bodyErr, client)
		if status := statuses[kind]; kind != tc.kind || status != tc.status {
			t.Errorf("%s: failureKind(%v, %v, %v) = %s %d, want %s %d", tc.name, tc.err, tc.bodyErr, tc.clientGone, kind, status, tc.kind, tc.status)
		}
		if kind != kindClientClosed && (titles[kind] == "" || details[kind] == "") {
			t.Errorf("%s: kind %s has no title or detail", tc.name, kind)
		}
	}
}

// TestAbortKind: a response cut after it started is the client's when it
// left or stalled, else the upstream's ("").
func TestAbortKind(t *testing.T) {
	cases := []struct {
		gone, stalled bool
		want          Kind
	}{
		{false, false, ""},
		{true, false, kindClientClosed},
		{false, true, kindClientStalled},
		{true, true, kindClientStalled}, // net/http cancels the request on the failed write too
	}
	for _, tc := range cases {
		if got := abortKind(tc.gone, tc.stalled); got != tc.want {
			t.Errorf("abortKind(gone %v, stalled %v) = %q, want %q", tc.gone, tc.stalled, got, tc.want)
		}
	}
}
