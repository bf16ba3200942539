package config

import (
	"fmt"
	"net/url"
	"strings"
)

// MCP bounds what breakwater learns of MCP traffic.
type MCP struct {
	// MaxTools is how many tool names, beyond those the config names,
	// get a metrics label of their own; later ones are labelled "other".
	// Always above 0 once defaulted (50).
	MaxTools int `yaml:"max_tools" json:"max_tools"`
	// Batches is refuse or allow: whether a JSON-RPC batch (a JSON array of
	// requests) is passed on. Refused ones get 400 bad_request. Allowed, a
	// batch matches a route only when every element does, counts once per
	// element against rate limits, and is never retried. "refuse" once
	// defaulted.
	Batches string `yaml:"batches" json:"batches"`

	fields
}

// Tracing exports a span per request and one per attempt over OTLP/HTTP.
type Tracing struct {
	// OTLPEndpoint is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: spans go
	// to /v1/traces under it. Required.
	OTLPEndpoint string `yaml:"otlp_endpoint" json:"otlp_endpoint"`
	// SampleRatio is the share of new traces recorded, 0 to 1; a trace the
	// client started follows the client's sampled flag. Default 1.
	SampleRatio float64 `yaml:"sample_ratio" json:"sample_ratio"`
	// ServiceName is the service.name resource attribute; default breakwater.
	ServiceName string `yaml:"service_name" json:"service_name"`

	fields
}

// TracesURL is where spans are posted: /v1/traces under the endpoint.
func (t *Tracing) TracesURL() string {
	return strings.TrimSuffix(t.OTLPEndpoint, "/") + "/v1/traces"
}

func mcpDefaults(c *Config) {
	// 50 tools cover every real MCP server's list; a label per tool beyond
	// that would let a client grow the series without bound.
	setDefault(&c.MCP.fields, "max_tools", &c.MCP.MaxTools, 50)
	// MCP removed batches in its 2025-06-18 revision, and a batch is one
	// request carrying many calls: refused unless a config asks for them.
	setDefault(&c.MCP.fields, "batches", &c.MCP.Batches, "refuse")
	if t := c.Tracing; t != nil {
		setDefault(&t.fields, "sample_ratio", &t.SampleRatio, 1.0) // a tracing block asks for traces: all of them unless told
		setDefault(&t.fields, "service_name", &t.ServiceName, "breakwater")
	}
}

// mcp checks the mcp and tracing blocks.
func (v *validator) mcp() {
	if v.c.MCP.MaxTools < 1 || v.c.MCP.MaxTools > 10000 {
		v.errorf("mcp.max_tools", "want 1 to 10000, got %d", v.c.MCP.MaxTools)
	}
	if b := v.c.MCP.Batches; b != "refuse" && b != "allow" {
		v.errorf("mcp.batches", "want refuse or allow, got %q", b)
	}
	t := v.c.Tracing
	if t == nil {
		return
	}
	u, err := url.Parse(t.OTLPEndpoint)
	switch {
	case t.OTLPEndpoint == "":
		v.errorf("tracing.otlp_endpoint", "required: the collector's OTLP/HTTP base URL (e.g. http://otel-collector:4318)")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		v.errorf("tracing.otlp_endpoint", "want an http:// or https:// base URL, got %q", t.OTLPEndpoint)
	case u.RawQuery != "" || u.Fragment != "":
		v.errorf("tracing.otlp_endpoint", "a base URL has no query or fragment")
	case u.User != nil:
		// It would show in /config and the logs: no secret belongs here.
		v.errorf("tracing.otlp_endpoint", "no credentials in the URL")
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		v.errorf("tracing.sample_ratio", "want 0 to 1, got %g", t.SampleRatio)
	}
	if strings.TrimSpace(t.ServiceName) == "" {
		v.errorf("tracing.service_name", "must not be empty")
	}
}

// rpcMatch checks a route's jsonrpc_method and tool conditions.
func (v *validator) rpcMatch(path string, m Match) {
	if len(m.Tool) > 0 && m.JSONRPCMethod != "" && m.JSONRPCMethod != "tools/call" {
		v.errorf(path+".tool", "only a tools/call names a tool, and jsonrpc_method is %q", m.JSONRPCMethod)
	}
	for i, name := range m.Tool {
		if name == "" {
			v.errorf(fmt.Sprintf("%s.tool[%d]", path, i), "empty tool name")
		}
	}
	if m.JSONRPCMethod != "" && strings.TrimSpace(m.JSONRPCMethod) != m.JSONRPCMethod {
		v.errorf(path+".jsonrpc_method", "leading or trailing spaces in %q", m.JSONRPCMethod)
	}
	for h := range m.Headers {
		if strings.EqualFold(h, "Mcp-Method") || strings.EqualFold(h, "Mcp-Name") {
			v.warnf(path+".headers."+h, "a client sends any %s it likes, whatever its body calls: match the call with jsonrpc_method or tool, which are read from the body", h)
		}
	}
}

// ToolNames are the tool names the config's routes match on, which always
// get a metrics label of their own.
func (c *Config) ToolNames() []string {
	var names []string
	for _, r := range c.Routes {
		if r != nil {
			names = append(names, r.Match.Tool...)
		}
	}
	return names
}
