package config

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"
)

// SecretValues lists every secret value in the config: headers.set values,
// the admin token, and the values of environment variables expanded into
// them. Redact uses it as a last line of defence.
func (c *Config) SecretValues() []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	add(c.Admin.Token.Reveal())
	for _, u := range c.Upstreams {
		for _, v := range u.Headers.Set {
			add(v.Reveal())
		}
	}
	secret := strings.Join(out, "\x00")
	for _, e := range c.expanded {
		if v := e.Reveal(); len(v) >= 4 && strings.Contains(secret, v) {
			add(v) // a variable used inside a secret is a secret wherever else it shows up
		}
	}
	// Longest first, so that a secret containing another is redacted whole.
	slices.SortFunc(out, func(a, b string) int {
		if n := cmp.Compare(len(b), len(a)); n != 0 {
			return n
		}
		return strings.Compare(a, b)
	})
	return out
}

// Redact replaces every secret value in s with [REDACTED], also where it
// is written JSON-escaped (json.Marshal writes "<" as \u003c).
func (c *Config) Redact(s string) string {
	for _, v := range c.SecretValues() {
		if q, _ := json.Marshal(v); string(q[1:len(q)-1]) != v {
			s = strings.ReplaceAll(s, string(q[1:len(q)-1]), Redacted)
		}
		s = strings.ReplaceAll(s, v, Redacted)
	}
	return s
}

// redactEcho redacts a problem message, which may echo a misplaced secret
// (a ${TOKEN} written where a duration belongs) whole or clipped.
func (c *Config) redactEcho(msg string) string {
	msg = c.Redact(msg)
	for _, v := range c.SecretValues() {
		for n := min(len(v), 40); n >= 4; n-- {
			msg = strings.ReplaceAll(msg, v[:n]+`..."`, Redacted+`"`)
		}
	}
	return msg
}

// JSON is the effective config with every secret redacted, for /config.
func (c *Config) JSON() []byte {
	b, _ := json.MarshalIndent(c, "", "  ")
	return []byte(c.Redact(string(b)))
}
