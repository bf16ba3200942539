package proxy

// FuzzMatch: route matching (cleanPath, stripPrefix, matcher) on request
// targets as Go's HTTP server parses them. The seed corpus is in
// testdata/fuzz/FuzzMatch; `make fuzz` runs it for FUZZTIME.

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/breakwater-proxy/breakwater/config"
)

func FuzzMatch(f *testing.F) {
	for _, s := range [][5]string{
		{"/api/users", "/api/", "/api", "GET", "example.com"},
		{"/api/../admin", "/api/", "/api", "GET", ""},
		{"/api/%2e%2e/admin", "/api/", "/api", "GET", ""},
		{"/api/..%2Fadmin", "/api/", "/api", "GET", ""},
		{"//api//x/./y/../", "/api/", "/api", "POST", "h:8080"},
		{"/a/b/..", "/a", "/a", "HEAD", "[::1]:80"},
		{"/..", "/", "", "GET", ""},
		{"*", "/", "", "OPTIONS", ""},
		{"http://evil.example/api/../x", "/api/", "/api", "GET", "evil.example"},
		{"/apix/y", "/api", "/api", "GET", ""},
		{"/api", "/api", "/api/", "DELETE", "EXAMPLE.com"},
		{"/a/.well-known/x", "/a/", "/a", "GET", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, target, prefix, strip, method, host string) {
		// The properties hold for any string ...
		c := cleanPath(target)
		if again := cleanPath(c); again != c {
			t.Fatalf("cleanPath not idempotent: %q → %q → %q", target, c, again)
		}
		if strings.HasPrefix(target, "/") {
			if !strings.HasPrefix(c, "/") {
				t.Fatalf("cleanPath(%q) = %q lost its leading slash", target, c)
			}
			noDotSegments(t, "cleanPath("+target+")", c)
			if strings.Contains(c, "//") {
				t.Fatalf("cleanPath(%q) = %q keeps a doubled slash", target, c)
			}
			if s := stripPrefix(c, strip); strings.HasPrefix(c, strip) && strip != "" {
				if !strings.HasPrefix(s, "/") {
					t.Fatalf("stripPrefix(%q, %q) = %q: not a path", c, strip, s)
				}
				noDotSegments(t, "stripPrefix("+c+", "+strip+")", s)
			}
		}
		_ = stripPrefix(target, strip)

		// ... and on what the server makes of a request line.
		if strings.ContainsAny(method+target+host, " \r\n") {
			return
		}
		raw := method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		urlPath := cleanPath(r.URL.Path)
		if r.URL.Path != "" && r.URL.Path[0] == '/' {
			noDotSegments(t, "request "+target, urlPath)
		}
		m := newMatcher(config.Match{PathPrefix: prefix, Methods: []string{"GET", "HEAD"}, Host: host})
		if m.match(r, urlPath) {
			if !strings.HasPrefix(urlPath, prefix) {
				t.Fatalf("prefix %q matched %q", prefix, urlPath)
			}
			if r.Method != "GET" && r.Method != "HEAD" {
				t.Fatalf("method %q matched [GET HEAD]", r.Method)
			}
		}
		exact := newMatcher(config.Match{Path: prefix}) // "" is no condition
		if exact.match(r, urlPath) && prefix != "" && urlPath != prefix {
			t.Fatalf("path %q matched %q", prefix, urlPath)
		}
	})
}

// noDotSegments fails when p has a "." or ".." segment.
func noDotSegments(t *testing.T, what, p string) {
	t.Helper()
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			t.Fatalf("%s = %q has a dot segment", what, p)
		}
	}
}
