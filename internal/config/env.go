package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/knockwall/knockwall/rules"
)

// keyPath is a key's place in the tree, one element per level. A service
// name may hold a dot, so a path is not a dotted string.
type keyPath []string

func (k keyPath) String() string { return strings.Join(k, ".") }

// envName is the variable that overrides the key: KNOCKWALL_ and the path
// in upper case, _ for each dot.
func envName(k keyPath) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.Join(k, "_"))
}

// leafKeys appends the path of every leaf key of the struct type rt
// (fields that are neither sections nor maps) under prefix.
func leafKeys(rt reflect.Type, prefix keyPath, out []keyPath) []keyPath {
	for i := range rt.NumField() {
		f := rt.Field(i)
		name := tagName(f)
		if name == "" {
			continue
		}
		k := append(slices.Clip(prefix), name)
		switch f.Type.Kind() {
		case reflect.Struct:
			out = leafKeys(f.Type, k, out)
		case reflect.Map:
			// services: their keys are listed per name by overrideKeys
		default:
			out = append(out, k)
		}
	}
	return out
}

// overrideKeys are the keys the environment may set: every leaf key of
// rules.Config, and every leaf key of each service the file names (a
// variable never creates a service).
func overrideKeys(services []string) []keyPath {
	keys := leafKeys(reflect.TypeFor[rules.Config](), nil, nil)
	svc := leafKeys(reflect.TypeFor[rules.ServiceConfig](), nil, nil)
	for _, name := range services {
		for _, k := range svc {
			keys = append(keys, append(keyPath{servicesKey, name}, k...))
		}
	}
	return keys
}

// applyEnv sets every key that a KNOCKWALL_* variable of environ names to
// the variable's value, and returns the keys it set, sorted. Two keys that
// one variable names (services SSH and ssh both have
// KNOCKWALL_SERVICES_SSH_OPEN_FOR) are an error rather than a guess.
func (p *parsed) applyEnv(environ []string) ([]string, error) {
	env := envMap(environ)
	if len(env) == 0 {
		return nil, nil
	}
	var services []string
	if s, ok := p.tree[servicesKey].(tree); ok {
		for name := range s {
			services = append(services, name)
		}
		slices.Sort(services)
	}
	byVar := map[string][]keyPath{}
	for _, k := range overrideKeys(services) {
		n := envName(k)
		byVar[n] = append(byVar[n], k)
	}
	var set []string
	for name, val := range env {
		keys := byVar[name]
		switch len(keys) {
		case 0:
			continue
		case 1:
		default:
			return nil, fmt.Errorf("%s names %s and %s: rename one of the services: %w", name, keys[0], keys[1], rules.ErrInvalid)
		}
		k := keys[0]
		p.set(k, val)
		set = append(set, k.String())
		p.fromEnv[k.String()] = name
	}
	slices.Sort(set)
	return set, nil
}

// set puts the value at k, making the sections on the way.
func (p *parsed) set(k keyPath, val string) {
	t := p.tree
	for _, name := range k[:len(k)-1] {
		sub, ok := t[name].(tree)
		if !ok {
			sub = tree{}
			t[name] = sub
		}
		t = sub
	}
	t[k[len(k)-1]] = val
}

// envMap is the KNOCKWALL_* variables of environ (os.Environ() form).
func envMap(environ []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix+"_") {
			m[k] = val
		}
	}
	return m
}
