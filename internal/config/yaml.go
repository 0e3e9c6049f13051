package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/knockwall/knockwall/rules"
)

// Bounds of the walk over merge keys (<<): a merge that refers back to
// itself, or merges that multiply each other, end in an error instead of
// recursing for ever or without end.
const (
	maxMergeDepth = 16
	maxPairs      = 1 << 16 // key/value pairs visited in one document
)

// tree is a configuration as generic values: a map for each section and
// service, and the values of leaf keys as YAML decodes them (strings,
// numbers, booleans, lists). Keys are the struct tags' names, as written.
type tree = map[string]any

// parsed is a YAML document checked against the model: its tree and the
// line of every key, by key path.
type parsed struct {
	tree  tree
	lines map[string]int
	// fromEnv names the variable that set a key, by key path, and
	// overrides lists those keys, sorted.
	fromEnv   map[string]string
	overrides []string
	pairs     int // visited so far, up to maxPairs
}

// parseYAML reads one YAML document into a tree shaped like rules.Config.
// A key the model does not have, a key given twice in one mapping and a
// section that is not a mapping are errors naming the key path and its
// line. Keys are case-sensitive: a service named SSH keeps its name.
func parseYAML(raw []byte) (parsed, error) {
	p := parsed{tree: tree{}, lines: map[string]int{}, fromEnv: map[string]string{}}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return p, nil // empty: every key takes its default
		}
		return p, fmt.Errorf("parse yaml: %s: %w", oneLine(err), rules.ErrInvalid)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return p, fmt.Errorf("parse yaml: a second document (---) follows line %d; the configuration is one document: %w", lastLine(&doc), rules.ErrInvalid)
	}
	if len(doc.Content) == 0 {
		return p, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return p, nil // only comments, or "---"
	}
	if resolve(root).Kind != yaml.MappingNode {
		return p, fmt.Errorf("parse yaml: line %d: the top level must be a mapping of keys (queue:, services:, ...), got %s: %w",
			root.Line, kindName(root), rules.ErrInvalid)
	}
	t, err := p.mapping(root, reflect.TypeFor[rules.Config](), "")
	if err != nil {
		return p, err
	}
	p.tree = t
	return p, nil
}

// mapping converts the mapping node n into a tree following the struct
// type rt, whose key path is prefix.
func (p *parsed) mapping(n *yaml.Node, rt reflect.Type, prefix string) (tree, error) {
	pairs, err := p.mappingPairs(n, prefix, 0)
	if err != nil {
		return nil, err
	}
	fields := fieldsOf(rt)
	out := tree{}
	for _, kv := range pairs {
		key, val := kv[0], kv[1]
		name := key.Value
		full := join(prefix, name)
		f, ok := fields[name]
		if !ok {
			return nil, &rules.KeyError{Key: full, Msg: fmt.Sprintf("unknown key (line %d)", key.Line)}
		}
		p.lines[full] = key.Line
		switch {
		case f.Type.Kind() == reflect.Struct:
			if resolve(val).Kind != yaml.MappingNode {
				return nil, &rules.KeyError{Key: full, Msg: fmt.Sprintf("must be a mapping of keys, got %s (line %d)", kindName(val), val.Line)}
			}
			sub, err := p.mapping(val, f.Type, full)
			if err != nil {
				return nil, err
			}
			out[name] = sub
		case f.Type.Kind() == reflect.Map:
			sub, err := p.named(val, f.Type.Elem(), full)
			if err != nil {
				return nil, err
			}
			out[name] = sub
		default:
			var v any
			if err := val.Decode(&v); err != nil {
				return nil, &rules.KeyError{Key: full, Msg: fmt.Sprintf("%s (line %d)", oneLine(err), val.Line)}
			}
			out[name] = v
		}
	}
	return out, nil
}

// named converts a mapping of names to mappings (services) into a tree of
// trees, each following the struct type rt.
func (p *parsed) named(n *yaml.Node, rt reflect.Type, prefix string) (tree, error) {
	if resolve(n).Kind != yaml.MappingNode {
		return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("must be a mapping of names, got %s (line %d)", kindName(n), n.Line)}
	}
	pairs, err := p.mappingPairs(n, prefix, 0)
	if err != nil {
		return nil, err
	}
	out := tree{}
	for _, kv := range pairs {
		key, val := kv[0], kv[1]
		full := join(prefix, key.Value)
		p.lines[full] = key.Line
		if resolve(val).Kind != yaml.MappingNode {
			return nil, &rules.KeyError{Key: full, Msg: fmt.Sprintf("must be a mapping of service keys, got %s (line %d)", kindName(val), val.Line)}
		}
		sub, err := p.mapping(val, rt, full)
		if err != nil {
			return nil, err
		}
		out[key.Value] = sub
	}
	return out, nil
}

// mappingPairs lists the key and value nodes of a mapping, merge keys (<<)
// expanded: a key written in the mapping itself wins over a merged one, as
// in YAML's merge type. A key written twice is an error naming both lines.
func (p *parsed) mappingPairs(n *yaml.Node, prefix string, depth int) ([][2]*yaml.Node, error) {
	if depth > maxMergeDepth {
		return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("merge keys (<<) nested deeper than %d (line %d)", maxMergeDepth, n.Line)}
	}
	n = resolve(n)
	var own, merged [][2]*yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if p.pairs++; p.pairs > maxPairs {
			return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("more than %d keys once merge keys (<<) are expanded (line %d)", maxPairs, key.Line)}
		}
		if key.ShortTag() == "!!merge" {
			more, err := p.mergePairs(val, prefix, depth)
			if err != nil {
				return nil, err
			}
			merged = append(merged, more...)
			continue
		}
		if key.Kind != yaml.ScalarNode {
			return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("a key must be a plain name, got %s (line %d)", kindName(key), key.Line)}
		}
		if first, dup := seen[key.Value]; dup {
			return nil, &rules.KeyError{Key: join(prefix, key.Value), Msg: fmt.Sprintf("given twice (lines %d and %d)", first, key.Line)}
		}
		seen[key.Value] = key.Line
		own = append(own, [2]*yaml.Node{key, val})
	}
	for _, kv := range merged {
		if _, ok := seen[kv[0].Value]; !ok {
			seen[kv[0].Value] = kv[0].Line
			own = append(own, kv)
		}
	}
	return own, nil
}

// mergePairs is what a merge key's value brings: one mapping, or a list
// of mappings of which the earlier win.
func (p *parsed) mergePairs(val *yaml.Node, prefix string, depth int) ([][2]*yaml.Node, error) {
	switch v := resolve(val); v.Kind {
	case yaml.MappingNode:
		return p.mappingPairs(v, prefix, depth+1)
	case yaml.SequenceNode:
		var out [][2]*yaml.Node
		for _, m := range v.Content {
			if resolve(m).Kind != yaml.MappingNode {
				return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("a merge key (<<) takes mappings, got %s (line %d)", kindName(m), m.Line)}
			}
			pairs, err := p.mappingPairs(m, prefix, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, pairs...)
		}
		return out, nil
	default:
		return nil, &rules.KeyError{Key: prefix, Msg: fmt.Sprintf("a merge key (<<) takes a mapping, got %s (line %d)", kindName(val), val.Line)}
	}
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < maxMergeDepth; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch resolve(n).Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func lastLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		l = max(l, lastLine(c))
	}
	return l
}

// fieldsOf maps the yaml tag of each field of the struct type rt to the
// field.
func fieldsOf(rt reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, rt.NumField())
	for i := range rt.NumField() {
		f := rt.Field(i)
		if name := tagName(f); name != "" {
			out[name] = f
		}
	}
	return out
}

// tagName is the key a field is read from: its yaml tag's name.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get(tagKey), ",")
	if name == "-" {
		return ""
	}
	return name
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// oneLine is err's message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
