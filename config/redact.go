package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SecretValues lists every secret value in the config: headers.set values,
// the admin token, and the values of environment variables expanded into
// them. Redact uses it as a last line of defence.
//
// Values shorter than 4 characters are left out: replacing them wherever
// they occur would redact every "a". A field filled by a variable that
// also fills a secret is redacted whole instead, whatever its length (see
// redactor).
func (c *Config) SecretValues() []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	add(c.Admin.Token.Reveal())
	if c.Store != nil {
		add(c.Store.Redis.Password.Reveal())
	}
	for _, u := range c.Upstreams {
		for _, v := range u.Headers.Set {
			add(v.Reveal())
		}
		if u.Auth != nil && u.Auth.OAuth2 != nil {
			add(u.Auth.OAuth2.ClientSecret.Reveal())
			add(u.Auth.OAuth2.Password.Reveal())
		}
	}
	for _, f := range c.fileValues {
		add(f.Reveal()) // a value read from a file is a secret wherever it shows up
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

// shown is the config as it shows itself: when a variable that fills a
// secret also fills other fields, the same file decoded with that variable
// written [REDACTED] (see Parse); else the config itself.
func (c *Config) shown() *Config {
	if c.view != nil {
		return c.view
	}
	return c
}

// JSON is the effective config with every secret redacted, for /config.
func (c *Config) JSON() []byte { return c.redactedJSON(c.Hash) }

// redactedJSON is JSON with hash in place of c.Hash.
func (c *Config) redactedJSON(hash string) []byte {
	cp := *c.shown()
	cp.Hash = hash
	b, _ := json.MarshalIndent(&cp, "", "  ")
	return []byte(c.Redact(string(b)))
}

// redactor knows the fields of a file that a variable filling a secret
// fills too (`url: https://api/${TOKEN}` next to `Authorization: Bearer
// ${TOKEN}`), and that variable's text. Such a field is a secret itself:
// problems never quote it, whatever its length, and the config shows it
// with the variable's part [REDACTED]. A nil redactor redacts nothing.
//
// The texts sit behind a pointer in Config: fmt prints a nested pointer
// as an address, never the value.
type redactor struct {
	paths map[string]bool // field paths as decoded (aliases followed)
	texts []string        // what those variables put in them, any length
}

// newRedactor finds the variables that fill a secret (secretVars) and the
// other fields they fill.
func newRedactor(d *decoder, uses map[*yaml.Node][]use) (r *redactor, secretVars map[string]bool) {
	secretVars = map[string]bool{}
	for path := range d.secrets {
		for _, u := range uses[d.scalars[path]] {
			secretVars[u.name] = true
		}
	}
	for _, us := range uses {
		for _, u := range us {
			if strings.HasPrefix(u.name, "file:") {
				secretVars[u.name] = true // a value read from a file is a secret
			}
		}
	}
	r = &redactor{paths: map[string]bool{}}
	for path, n := range d.scalars {
		if d.secrets[path] {
			continue
		}
		for _, u := range uses[n] {
			if !secretVars[u.name] {
				continue
			}
			r.paths[path] = true
			if u.text != "" && !slices.Contains(r.texts, u.text) {
				r.texts = append(r.texts, u.text)
			}
		}
	}
	return r, secretVars
}

// args redacts the arguments of a problem's message at path: all of them
// when path or a field below it holds such a variable (a message may quote
// part of a value, like the port of a listen address), and any whose text
// holds one of the variables' texts (a message may quote another field,
// or a value inherited from elsewhere).
func (r *redactor) args(path string, args []any) []any {
	if r == nil || len(r.paths) == 0 || len(args) == 0 {
		return args
	}
	all := r.covers(path)
	out := slices.Clone(args)
	for i, a := range out {
		if all || r.holdsText(fmt.Sprint(a)) {
			out[i] = redactedArg{}
		}
	}
	return out
}

func (r *redactor) covers(path string) bool {
	for p := range r.paths {
		if p == path || strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[") {
			return true
		}
	}
	return false
}

func (r *redactor) holdsText(s string) bool {
	for _, t := range r.texts {
		if strings.Contains(s, t) {
			return true
		}
	}
	return false
}

// redactedArg prints [REDACTED] under any verb ("[REDACTED]" under %q).
type redactedArg struct{}

func (redactedArg) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = io.WriteString(f, strconv.Quote(Redacted))
		return
	}
	_, _ = io.WriteString(f, Redacted)
}
