package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds how many YAML nodes one file may expand to, aliases
// followed. A "billion laughs" file expands exponentially; a real config
// is a few hundred nodes.
const maxNodes = 100_000

// maxDepth bounds how deep decoding recurses. The schema is a few levels
// deep; only a merge key that includes its own mapping (`&a {<<: *a}`,
// which yaml.v3 accepts) goes deeper, and without this bound it would
// recurse maxNodes levels, growing the stack by tens of megabytes.
const maxDepth = 100

// decoder walks a yaml.Node tree into Go values strictly: an unknown key, a
// duplicate key or a value of the wrong shape is a Problem with its field
// path and line, and decoding goes on so that every problem is reported.
// yaml.v3's own KnownFields decoding stops at the first bad scalar and
// names types rather than field paths, hence this walker.
type decoder struct {
	file     string
	problems []Problem
	lines    map[string]int
	nodes    int
	depth    int
	// bomb is the problem reported when the walk was abandoned.
	bomb *Problem
	// scalars maps each field path to the scalar decoded there, and
	// secrets marks the paths that hold a Secret, so that Parse can tell
	// which variables fill a secret and which other fields they fill. Nil
	// maps record nothing.
	scalars map[string]*yaml.Node
	secrets map[string]bool
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.problems = append(d.problems, newProblem(d.file, n.Line, path, false, format, args...))
}

var (
	scalarType  = reflect.TypeOf((*scalar)(nil)).Elem()
	offableType = reflect.TypeOf((*interface{ turnOff() })(nil)).Elem()
	markerType  = reflect.TypeOf((*interface{ markSet(string) })(nil)).Elem()
	secretType  = reflect.TypeOf(Secret{})
)

// decode fills v (addressable) from n. It returns false when the walk was
// abandoned (too many nodes).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) bool {
	d.nodes++
	if d.nodes > maxNodes {
		if d.bomb == nil {
			d.bomb = &Problem{File: d.file, Line: n.Line, Path: path,
				Msg: fmt.Sprintf("document expands to more than %d nodes through its aliases (an alias bomb?)", maxNodes)}
		}
		return false
	}
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > maxDepth {
		if d.bomb == nil {
			d.bomb = &Problem{File: d.file, Line: n.Line, Path: path,
				Msg: fmt.Sprintf("nested more than %d levels deep (a merge key that includes its own mapping?)", maxDepth)}
		}
		return false
	}
	if n.Kind == yaml.AliasNode {
		return d.decode(n.Alias, v, path)
	}
	if _, seen := d.lines[path]; !seen && path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && d.scalars != nil {
		d.scalars[path] = n
		if v.Type() == secretType {
			d.secrets[path] = true
		}
	}
	if v.CanAddr() && v.Addr().Type().Implements(scalarType) {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a single value, got a %s", kindName(n))
			return true
		}
		if err := v.Addr().Interface().(scalar).parseScalar(n.Value); err != nil {
			if e, ok := errors.AsType[*echoError](err); ok {
				d.fail(n, path, e.format, e.args...)
			} else {
				// The other parse errors quote nothing.
				d.problems = append(d.problems, Problem{File: d.file, Line: n.Line, Path: path, Msg: err.Error()})
			}
		}
		return true
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return true // "retry:" with nothing after it: not set
		}
		if v.Type().Implements(offableType) && n.Kind == yaml.ScalarNode {
			switch strings.ToLower(n.Value) {
			case "off", "false", "no":
				p := reflect.New(v.Type().Elem())
				p.Interface().(interface{ turnOff() }).turnOff()
				v.Set(p)
				return true
			case "on", "true", "yes":
				v.Set(reflect.New(v.Type().Elem()))
				return true
			}
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	case reflect.Struct:
		return d.decodeStruct(n, v, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, path, "want a mapping, got a %s", kindName(n))
			return true
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		if !d.merge(n, v, path) {
			return false
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if isMergeKey(k) {
				continue
			}
			if seen[k.Value] {
				d.fail(k, path+"."+k.Value, "duplicate key")
				continue
			}
			seen[k.Value] = true
			e := reflect.New(v.Type().Elem()).Elem()
			if !d.decode(val, e, path+"."+k.Value) {
				return false
			}
			v.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		return true
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list, got a %s", kindName(n))
			return true
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if !d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)) {
				return false
			}
		}
		v.Set(s)
		return true
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want a single value, got a %s", kindName(n))
		return true
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if err != nil {
			d.fail(n, path, "want a whole number, got %q", clip(n.Value))
		}
		v.SetInt(int64(i))
	case reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			// NaN slips through every range check and makes the config
			// unmarshalable to JSON (so /config and Hash would be empty).
			d.fail(n, path, "want a number, got %q", clip(n.Value))
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil {
			d.fail(n, path, "want true or false, got %q", clip(n.Value))
		}
		v.SetBool(b)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
	return true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping, got a %s", kindName(n))
		return true
	}
	if !d.merge(n, v, path) {
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			continue
		}
		fpath := k.Value
		if path != "" {
			fpath = path + "." + k.Value
		}
		if seen[k.Value] {
			d.fail(k, fpath, "duplicate key")
			continue
		}
		seen[k.Value] = true
		field, owner, ok := fieldByKey(v, k.Value)
		if !ok {
			d.fail(k, fpath, "unknown key%s", suggest(v.Type(), k.Value))
			continue
		}
		d.lines[fpath] = k.Line
		if owner.CanAddr() && owner.Addr().Type().Implements(markerType) {
			owner.Addr().Interface().(interface{ markSet(string) }).markSet(k.Value)
		}
		if !d.decode(val, field, fpath) {
			return false
		}
	}
	return true
}

func isMergeKey(k *yaml.Node) bool { return k.Value == "<<" && k.Tag == "!!merge" }

// merge decodes the merge keys of mapping n (<<: *base, or <<: [*a, *b])
// into v first, so that the mapping's own keys override them. In a list,
// an earlier mapping's keys win over a later one's, so they are decoded
// last.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMergeKey(n.Content[i]) {
			continue
		}
		val := n.Content[i+1]
		if val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		if val.Kind != yaml.SequenceNode {
			if !d.decode(n.Content[i+1], v, path) {
				return false
			}
			continue
		}
		for j := len(val.Content) - 1; j >= 0; j-- {
			if !d.decode(val.Content[j], v, path) {
				return false
			}
		}
	}
	return true
}

// fieldByKey finds the field tagged key in struct v, looking into inline
// embedded structs; owner is the struct that declares it.
func fieldByKey(v reflect.Value, key string) (field, owner reflect.Value, ok bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" {
			if fv, ov, ok := fieldByKey(v.Field(i), key); ok {
				return fv, ov, true
			}
			continue
		}
		if name == key {
			return v.Field(i), v, true
		}
	}
	return reflect.Value{}, reflect.Value{}, false
}

// keysOf lists the YAML keys a struct type accepts.
func keysOf(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case opts == "inline":
			keys = append(keys, keysOf(f.Type)...)
		default:
			keys = append(keys, name)
		}
	}
	return keys
}

// suggest names the closest known key, for typos.
func suggest(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for _, k := range keysOf(t) {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return " (known keys: " + strings.Join(keysOf(t), ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "single value"
}
