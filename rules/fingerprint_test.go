package rules_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// TestFingerprint: a service's fingerprint changes with what it protects
// and how it opens (ports, sequence, key, token settings), and not with
// how long a grant lasts.
func TestFingerprint(t *testing.T) {
	keys := map[string]*spa.Key{}
	for i, name := range []string{"a.key", "b.key"} {
		k, err := spa.NewKey(bytes.Repeat([]byte{byte(i + 1)}, spa.MinKeySize))
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = k
	}
	fp := func(mod func(s *rules.ServiceConfig)) [32]byte {
		t.Helper()
		c := rules.Defaults()
		s := rules.ServiceDefaults()
		s.Ports, s.Sequence = []int{22}, []string{"7000", "8000", "9000"}
		s.SPA.KeyFile, s.SPA.Port = "a.key", 62201
		if mod != nil {
			mod(&s)
		}
		c.Services = map[string]rules.ServiceConfig{"ssh": s}
		set, err := rules.Compile(c, rules.WithKeyReader(func(p string) (*spa.Key, error) { return keys[p], nil }))
		if err != nil {
			t.Fatal(err)
		}
		return set.Services[0].Fingerprint()
	}
	base := fp(nil)
	if fp(nil) != base {
		t.Fatal("the same service, two fingerprints")
	}
	if fp(func(s *rules.ServiceConfig) { s.OpenFor = time.Hour; s.Connections = 2 }) != base {
		t.Error("open_for and connections changed the fingerprint")
	}
	for name, mod := range map[string]func(s *rules.ServiceConfig){
		"ports":          func(s *rules.ServiceConfig) { s.Ports = []int{22, 2222} },
		"sequence":       func(s *rules.ServiceConfig) { s.Sequence = []string{"7000", "8000", "9001"} },
		"key":            func(s *rules.ServiceConfig) { s.SPA.KeyFile = "b.key" },
		"spa port":       func(s *rules.ServiceConfig) { s.SPA.Port = 62202 },
		"max_skew":       func(s *rules.ServiceConfig) { s.SPA.MaxSkew = time.Minute },
		"require_source": func(s *rules.ServiceConfig) { s.SPA.RequireSource = true },
	} {
		if fp(mod) == base {
			t.Errorf("changing the %s left the fingerprint", name)
		}
	}
}
