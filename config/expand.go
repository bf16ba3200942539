package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expander replaces ${VAR} and ${VAR:-default} in scalar values ($$ is a
// literal $). It keeps the values it expanded, and which variables filled
// each scalar, so that a variable used inside a secret can be redacted
// wherever else it shows up.
type expander struct {
	refs     []string // the ${…} the placeholders stand for
	file     string
	lookup   func(string) (string, bool)
	values   []string
	uses     map[*yaml.Node][]use
	problems []Problem
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
		if val, ok := x.lookup(sub[1]); ok && (val != "" || sub[2] == "") {
			if val != "" {
				x.values = append(x.values, val)
			}
			x.uses[n] = append(x.uses[n], use{sub[1], val})
			return val
		}
		if sub[2] != "" {
			x.uses[n] = append(x.uses[n], use{sub[1], sub[3]})
			return sub[3]
		}
		x.problems = append(x.problems, Problem{File: x.file, Line: n.Line, Path: path,
			Msg: "environment variable " + sub[1] + " is not set (write ${" + sub[1] + ":-default} to give a default)"})
		return ""
	})
}
