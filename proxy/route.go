package proxy

import (
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/mcp"
)

// matcher is a route's match block, prepared for the hot path.
type matcher struct {
	path, prefix string
	methods      []string
	host         string
	headers      [][2]string
	rpcMethod    string   // match.jsonrpc_method
	tools        []string // match.tool
}

func newMatcher(m config.Match) matcher {
	mt := matcher{path: m.Path, prefix: m.PathPrefix, methods: m.Methods, host: strings.ToLower(m.Host),
		rpcMethod: m.JSONRPCMethod, tools: m.Tool}
	for k, v := range m.Headers {
		mt.headers = append(mt.headers, [2]string{http.CanonicalHeaderKey(k), v})
	}
	return mt
}

// match reports whether r satisfies every condition; urlPath is the
// request's cleaned path.
func (m *matcher) match(r *http.Request, urlPath string) bool {
	if m.path != "" && urlPath != m.path {
		return false
	}
	if m.prefix != "" && !strings.HasPrefix(urlPath, m.prefix) {
		return false
	}
	if len(m.methods) > 0 && !contains(m.methods, r.Method) {
		return false
	}
	if len(m.methods) == 0 && refusedMethod(r.Method) {
		return false // CONNECT and TRACE only where a route lists them
	}
	if m.host != "" && !strings.EqualFold(hostOnly(r.Host), m.host) {
		return false
	}
	for _, h := range m.headers {
		if r.Header.Get(h[0]) != h[1] {
			return false
		}
	}
	return true
}

// needsCall: the route matches on the JSON-RPC call, which may have to be
// read from the body.
func (m *matcher) needsCall() bool { return m.rpcMethod != "" || len(m.tools) > 0 }

// matchCall checks the JSON-RPC conditions against the body: every
// message of a batch must meet them. A body that is no JSON-RPC meets none.
func (m *matcher) matchCall(b mcp.Body) bool {
	if len(b.Messages) == 0 {
		return false
	}
	for _, c := range b.Messages {
		if m.rpcMethod != "" && c.Method != m.rpcMethod {
			return false
		}
		if len(m.tools) > 0 && (c.Method != "tools/call" || !contains(m.tools, c.Name)) {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// cleanPath removes dot segments and doubled slashes, so that
// /api/../admin cannot match the /api/ route and then reach /admin
// upstream. A trailing slash is kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "/.") && !strings.Contains(p, "//") {
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// stripPrefix removes prefix from p at a segment boundary.
func stripPrefix(p, prefix string) string {
	if prefix == "" || !strings.HasPrefix(p, prefix) {
		return p
	}
	rest := p[len(prefix):]
	if rest != "" && rest[0] != '/' && !strings.HasSuffix(prefix, "/") {
		return p // "/api" does not strip "/apix"
	}
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return rest
}
