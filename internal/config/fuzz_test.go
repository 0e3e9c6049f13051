package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// FuzzDecode feeds arbitrary YAML and environment to Decode. It must never
// panic; it returns either a Config or an error wrapping rules.ErrInvalid,
// and whatever Config it returns, Compile must not panic on either.
func FuzzDecode(f *testing.F) {
	f.Add(rules.ExampleYAML, "")
	f.Add(rules.ExampleYAML, "KNOCKWALL_QUEUE_NUM=7\nKNOCKWALL_SERVICES_SSH_PORTS=22,2222")
	f.Add([]byte("services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n"), "KNOCKWALL_SERVICES_SSH_OPEN_FOR=2m")
	f.Add([]byte("bogus: 1\n"), "")
	f.Add([]byte("- a\n- b\n"), "")
	f.Add([]byte("queue: [1, 2\n"), "")
	f.Add([]byte("services:\n  ssh: 5\n"), "")
	f.Add([]byte("a: &a [*a]\n"), "")
	f.Add([]byte("queue: {num: 1}\nqueue: {num: 2}\n"), "")
	f.Add([]byte("services:\n  s: &d {ports: [22], sequence: [1]}\n  t: {<<: [*d, *d], ports: [23]}\n"), "KNOCKWALL_SERVICES_T_PORTS=9")
	f.Add([]byte("services:\n  a: &a {<<: *a}\n"), "")
	f.Add([]byte("services: {SSH: {ports: [22]}, ssh: {ports: [22]}}\n"), "KNOCKWALL_SERVICES_SSH_PORTS=1")
	f.Fuzz(func(t *testing.T, raw []byte, env string) {
		environ := strings.Split(env, "\n")
		c, err := Decode(raw, environ)
		if err != nil {
			if !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Decode error %v does not wrap rules.ErrInvalid", err)
			}
			return
		}
		if _, err := rules.Compile(c); err != nil && !errors.Is(err, rules.ErrInvalid) {
			t.Fatalf("Compile error %v does not wrap rules.ErrInvalid", err)
		}
	})
}
