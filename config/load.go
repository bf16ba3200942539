package config

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong (or, with Warning, doubtful) in a config file.
// It prints as FILE:LINE: field.path: message.
type Problem struct {
	File    string
	Line    int
	Path    string
	Msg     string
	Warning bool
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:", p.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems are every error found in a file; Error lists them one a line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Overrides are command-line flags; they win over the file.
type Overrides struct {
	Listen   string
	Admin    string
	LogLevel string
}

// maxFileSize bounds what is read: a config is kilobytes.
const maxFileSize = 4 << 20

// Load reads, expands, decodes, defaults and validates the file at path.
// On failure the error is a Problems holding every error found; warnings
// are returned either way.
func Load(path string, o Overrides) (*Config, []Problem, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, Problems{{File: path, Msg: "cannot read config: " + errors.Unwrap(err).Error()}}
	}
	if st.Size() > maxFileSize {
		return nil, nil, Problems{{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, Problems{{File: path, Msg: "cannot read config: " + err.Error()}}
	}
	return Parse(path, data, os.LookupEnv, o)
}

// Parse is Load on bytes already read, with lookup for ${VAR}.
func Parse(file string, data []byte, lookup func(string) (string, bool), o Overrides) (*Config, []Problem, error) {
	// Variables are expanded in values only, after parsing: never in
	// comments or keys, and a value cannot change the file's structure.
	// Before parsing, each ${…} becomes a plain placeholder, so that an
	// unquoted ${VAR} is still a value where YAML treats "{" and "}" as
	// syntax (`api: { url: ${API_URL} }`).
	x := &expander{file: file, lookup: lookup}
	text := envRef.ReplaceAllStringFunc(string(data), func(m string) string {
		if m == "$$" {
			return m
		}
		x.refs = append(x.refs, m)
		return placeholderPrefix + strconv.Itoa(len(x.refs)-1) + "_"
	})
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(text), &root); err != nil {
		return nil, nil, Problems{yamlProblem(file, err)}
	}
	x.walk(&root, "")
	expanded, problems := x.values, x.problems
	cfg := &Config{File: file}
	d := &decoder{file: file, lines: map[string]int{}}
	if len(root.Content) == 0 {
		problems = append(problems, Problem{File: file, Msg: "file is empty"})
	} else {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if d.bomb != nil {
		// The problems found on the way are mostly the same few repeated
		// thousands of times; the bomb is the one worth reading.
		return nil, nil, append(Problems(problems), *d.bomb)
	}
	problems = append(problems, d.problems...)
	if len(root.Content) == 0 {
		return nil, nil, Problems(problems)
	}
	cfg.lines = d.lines
	for _, v := range expanded {
		cfg.expanded = append(cfg.expanded, NewSecret(v))
	}
	// Validate even a file that did not decode cleanly, so one run reports
	// every mistake; a field that failed to decode is not judged again.
	cfg.decodeProblems = problems
	return finish(cfg, o)
}

// Quick builds quick mode's config: one catch-all route to upstreamURL
// with the safe defaults.
func Quick(upstreamURL string, o Overrides) (*Config, []Problem, error) {
	cfg := &Config{
		Upstreams: map[string]*Upstream{"default": {URL: upstreamURL}},
		Routes:    []*Route{{Name: "default", Upstream: "default", Match: Match{PathPrefix: "/"}}},
		lines:     map[string]int{},
	}
	return finish(cfg, o)
}

func finish(cfg *Config, o Overrides) (*Config, []Problem, error) {
	if o.Listen != "" {
		cfg.Listen = o.Listen
	}
	if o.Admin != "" {
		cfg.Admin.Listen = o.Admin
	}
	if o.LogLevel != "" {
		cfg.Log.Level = o.LogLevel
		cfg.Log.markSet("level")
	}
	applyDefaults(cfg)
	problems := cfg.decodeProblems
	bad := map[string]bool{}
	for _, p := range problems {
		bad[p.Path] = true
	}
	for _, p := range validate(cfg) {
		if !bad[p.Path] {
			problems = append(problems, p)
		}
	}
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
	var errs, warns []Problem
	for _, p := range problems {
		p.Msg, p.Path = cfg.redactEcho(p.Msg), cfg.Redact(p.Path)
		if p.Warning {
			warns = append(warns, p)
		} else {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return nil, warns, Problems(errs)
	}
	cfg.Hash = cfg.hash()
	return cfg, warns, nil
}

// hash fingerprints the effective config.
func (c *Config) hash() string {
	b, _ := json.Marshal(c.withoutHash())
	// Secrets print redacted, so fold their values in separately, each
	// after where it is set: a new token is a new config, however short,
	// and the order is fixed so that the same file always hashes the same.
	h := sha256.New()
	h.Write(b)
	fmt.Fprintf(h, "\x00admin.token\x00%s", c.Admin.Token.Reveal())
	for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
		set := c.Upstreams[name].Headers.Set
		for _, k := range slices.Sorted(maps.Keys(set)) {
			fmt.Fprintf(h, "\x00upstreams.%s.headers.set.%s\x00%s", name, k, set[k].Reveal())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (c *Config) withoutHash() Config {
	cp := *c
	cp.Hash = ""
	return cp
}

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

// Line returns the line where path (or its nearest parent) was written.
func (c *Config) Line(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expander replaces ${VAR} and ${VAR:-default} in scalar values ($$ is a
// literal $). It keeps the values it expanded, so that those used inside a
// secret can be redacted wherever else they show up.
type expander struct {
	refs     []string // the ${…} the placeholders stand for
	file     string
	lookup   func(string) (string, bool)
	values   []string
	problems []Problem
}

func (x *expander) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			x.walk(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			n.Content[i].Value = x.restore(n.Content[i].Value) // a key is never expanded
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			x.walk(n.Content[i+1], p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			x.walk(c, fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml.ScalarNode:
		n.Value = x.restore(n.Value)
		if strings.Contains(n.Value, "$") {
			n.Value = x.expand(n.Value, n.Line, path)
			if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) == 0 {
				n.Tag = "" // re-resolve: ${PORT} may be a number, ${FLAG} a bool
			}
		}
	}
}

// placeholderPrefix marks where a ${…} stood before parsing; it is plain
// YAML in any context.
const placeholderPrefix = "BWENVREF7q_"

var placeholder = regexp.MustCompile(placeholderPrefix + `(\d+)_`)

// restore puts back the ${…} that placeholders stand for.
func (x *expander) restore(v string) string {
	if len(x.refs) == 0 || !strings.Contains(v, placeholderPrefix) {
		return v
	}
	return placeholder.ReplaceAllStringFunc(v, func(m string) string {
		i, err := strconv.Atoi(placeholder.FindStringSubmatch(m)[1])
		if err != nil || i >= len(x.refs) {
			return m
		}
		return x.refs[i]
	})
}

func (x *expander) expand(v string, line int, path string) string {
	return envRef.ReplaceAllStringFunc(v, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := envRef.FindStringSubmatch(m)
		if val, ok := x.lookup(sub[1]); ok && (val != "" || sub[2] == "") {
			if val != "" {
				x.values = append(x.values, val)
			}
			return val
		}
		if sub[2] != "" {
			return sub[3]
		}
		x.problems = append(x.problems, Problem{File: x.file, Line: line, Path: path,
			Msg: "environment variable " + sub[1] + " is not set (write ${" + sub[1] + ":-default} to give a default)"})
		return ""
	})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlProblem(file string, err error) Problem {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscan(m[1], &line)
		return Problem{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return Problem{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}
