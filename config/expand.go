package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var envRef = regexp.MustCompile(`\$\$|\$\{file:([^}]*)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expander replaces ${VAR} and ${VAR:-default} in scalar values ($$ is a
// literal $). It keeps the values it expanded, and which variables filled
// each scalar, so that a variable used inside a secret can be redacted
// wherever else it shows up.
type expander struct {
	refs   []string // the ${…} the placeholders stand for
	file   string
	lookup func(string) (string, bool)
	// readFile reads the file a ${file:/path} names (see readSecretFile).
	readFile func(path string) (string, error)
	files    []string // the paths ${file:…} named, in order, once each
	// fileValues are what those files held: secrets wherever they show up.
	fileValues []string
	values     []string
	uses       map[*yaml.Node][]use
	problems   []Problem
}

// use is one variable that filled part of a scalar: its name, and the text
// it put there (its value, or the default written after :-).
type use struct{ name, text string }

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
			n.Value = x.expand(n, path)
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

func (x *expander) expand(n *yaml.Node, path string) string {
	return envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := envRef.FindStringSubmatch(m)
		if strings.HasPrefix(m, "${file:") {
			return x.file1(n, path, sub[1])
		}
		name, hasDefault, def := sub[2], sub[3] != "", sub[4]
		if val, ok := x.lookup(name); ok && (val != "" || !hasDefault) {
			if val != "" {
				x.values = append(x.values, val)
			}
			x.uses[n] = append(x.uses[n], use{name, val})
			return val
		}
		if hasDefault {
			x.uses[n] = append(x.uses[n], use{name, def})
			return def
		}
		x.problems = append(x.problems, Problem{File: x.file, Line: n.Line, Path: path,
			Msg: "environment variable " + name + " is not set (write ${" + name + ":-default} to give a default)"})
		return ""
	})
}

// file1 expands one ${file:/path}: the file's content without its trailing
// newline. Its value is a secret: it is redacted wherever it shows up, and
// a field it fills is shown [REDACTED] (the use is named "file:/path", and
// newRedactor counts every such use as one filling a secret).
func (x *expander) file1(n *yaml.Node, path, name string) string {
	if !slices.Contains(x.files, name) {
		x.files = append(x.files, name)
	}
	val, err := x.readFile(name)
	if err != nil {
		x.problems = append(x.problems, Problem{File: x.file, Line: n.Line, Path: path,
			Msg: "${file:" + name + "}: " + err.Error()})
		return ""
	}
	if val != "" {
		x.values = append(x.values, val)
		x.fileValues = append(x.fileValues, val)
	}
	x.uses[n] = append(x.uses[n], use{"file:" + name, val})
	return val
}

// maxSecretFile bounds a ${file:…}: a secret is bytes, not megabytes.
const maxSecretFile = 64 << 10

// readSecretFile reads a ${file:/path}: its content without trailing
// newlines (what `echo secret > file` and a Kubernetes Secret volume leave).
// Its errors name the path, never the content.
func readSecretFile(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", errors.New("the path must be absolute")
	}
	b, err := ReadRegular(path, maxSecretFile)
	switch {
	case errors.Is(err, ErrTooLarge):
		return "", fmt.Errorf("the file is larger than %d bytes", maxSecretFile)
	case err != nil:
		return "", errors.New("cannot read the file: " + err.Error())
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// hiddenFile stands for readSecretFile where the config is decoded to be
// shown: a field filled from a file shows [REDACTED].
func hiddenFile(string) (string, error) { return Redacted, nil }
