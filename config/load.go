package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Overrides are command-line flags (and $BREAKWATER_TRANSPORT); they win
// over the file.
type Overrides struct {
	Listen   string
	Admin    string
	LogLevel string
	// Transport, when set ("fast" or "standard"), is every plain http://
	// upstream's transport whatever the file says: an escape hatch should
	// the lean transport not suit an upstream, and how the test suites run
	// under both. https upstreams always use standard.
	Transport string
}

// maxFileSize bounds what is read: a config is kilobytes.
const maxFileSize = 4 << 20

// Load reads, expands, decodes, defaults and validates the file at path.
// On failure the error is a Problems holding every error found; warnings
// are returned either way.
func Load(path string, o Overrides) (*Config, []Problem, error) {
	// A regular file only: a named pipe would block the read forever.
	data, err := ReadRegular(path, maxFileSize)
	switch {
	case errors.Is(err, ErrTooLarge):
		return nil, nil, Problems{{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", maxFileSize)}}
	case err != nil:
		return nil, nil, Problems{{File: path, Msg: "cannot read config: " + err.Error()}}
	}
	return Parse(path, data, os.LookupEnv, o)
}

// Parse is Load on bytes already read, with lookup for ${VAR}.
func Parse(file string, data []byte, lookup func(string) (string, bool), o Overrides) (*Config, []Problem, error) {
	cfg, secretVars, err := decodeFile(file, data, lookup, readSecretFile)
	if err != nil {
		return nil, nil, err
	}
	if len(cfg.redactor.paths) > 0 {
		// A variable that fills a secret fills other fields too: what the
		// config shows of itself (/config, the summary, the hash) is the
		// same file decoded with that variable written [REDACTED]. The
		// file decoded once already, so this decodes too; its problems
		// (a duration cannot read [REDACTED]) are not the file's.
		hide := func(name string) (string, bool) {
			if secretVars[name] {
				return Redacted, true
			}
			return lookup(name)
		}
		if view, _, err := decodeFile(file, data, hide, hiddenFile); err == nil {
			prepare(view, o)
			cfg.view = view
		}
	}
	return finish(cfg, o)
}

// decodeFile expands and decodes data, and finds which variables fill a
// secret (secretVars) and which other fields they fill (cfg.redactor). A
// file that cannot be decoded at all is an error; the problems of one that
// can wait in cfg.decodeProblems for validation.
func decodeFile(file string, data []byte, lookup func(string) (string, bool), readFile func(string) (string, error)) (cfg *Config, secretVars map[string]bool, err error) {
	// Variables are expanded in values only, after parsing: never in
	// comments or keys, and a value cannot change the file's structure.
	// Before parsing, each ${…} becomes a plain placeholder, so that an
	// unquoted ${VAR} is still a value where YAML treats "{" and "}" as
	// syntax (`api: { url: ${API_URL} }`).
	x := &expander{file: file, lookup: lookup, readFile: readFile, uses: map[*yaml.Node][]use{}}
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
	cfg = &Config{File: file}
	d := &decoder{file: file, lines: map[string]int{}, scalars: map[string]*yaml.Node{}, secrets: map[string]bool{}}
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
	for _, v := range x.fileValues {
		cfg.fileValues = append(cfg.fileValues, NewSecret(v))
	}
	cfg.files = x.files
	cfg.redactor, secretVars = newRedactor(d, x.uses)
	// Validate even a file that did not decode cleanly, so one run reports
	// every mistake; a field that failed to decode is not judged again.
	cfg.decodeProblems = problems
	return cfg, secretVars, nil
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

// prepare applies the command-line overrides, then the defaults.
func prepare(cfg *Config, o Overrides) {
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
	if o.Transport != "" {
		for _, u := range cfg.Upstreams {
			if strings.HasPrefix(strings.ToLower(u.URL), "http://") {
				u.Transport = o.Transport
			}
		}
	}
}

func finish(cfg *Config, o Overrides) (*Config, []Problem, error) {
	prepare(cfg, o)
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
		p.render(cfg.redactor)
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
