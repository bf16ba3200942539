package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Problem is one thing wrong (or, with Warning, doubtful) in a config file.
// It prints as FILE:LINE: field.path: message.
type Problem struct {
	File    string
	Line    int
	Path    string
	Msg     string
	Warning bool

	// raw is the message's format and arguments until Parse renders it
	// with the arguments that show a secret redacted (which fields those
	// are is known only once the whole file is decoded). A pointer, so
	// that fmt prints an address rather than the arguments.
	raw *message
}

type message struct {
	format string
	args   []any
}

// newProblem is a problem whose message quotes values from the file:
// render redacts them before the problem leaves Parse.
func newProblem(file string, line int, path string, warning bool, format string, args ...any) Problem {
	return Problem{File: file, Line: line, Path: path, Warning: warning,
		Msg: fmt.Sprintf(format, args...), raw: &message{format, args}}
}

// render settles the message, with every argument that could show a
// secret replaced by [REDACTED].
func (p *Problem) render(r *redactor) {
	if p.raw != nil {
		p.Msg = fmt.Sprintf(p.raw.format, r.args(p.Path, p.raw.args)...)
		p.raw = nil
	}
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
