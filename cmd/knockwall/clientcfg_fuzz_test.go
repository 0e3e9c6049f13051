package main

import "testing"

// FuzzClientConfig: decoding any client config either fails with an error
// or gives one whose every service has a method and every server a
// service; it never panics.
func FuzzClientConfig(f *testing.F) {
	f.Add([]byte(goodClientConfig))
	f.Add([]byte("servers: {a: {services: {s: {rotate: {key_file: k, length: 3, period: 30s, range: [1, 9]}}}}}\n"))
	f.Add([]byte("servers: {a: {source: auto, services: {s: {spa: {key_file: k, transport: syn}, ports: [22]}}}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeClientConfig(b)
		if err != nil {
			return
		}
		for name, s := range c.Servers {
			if len(s.Services) == 0 {
				t.Fatalf("server %s without services accepted", name)
			}
			for sn, svc := range s.Services {
				if _, err := svc.method(); err != nil {
					t.Fatalf("%s.%s accepted without a method: %v", name, sn, err)
				}
			}
		}
	})
}

// FuzzCheckOutput: reading any text as `knockwall config check` output
// (what client init --from-check takes from a file) either fails with an
// error or gives services that each open one way at least; it never
// panics.
func FuzzCheckOutput(f *testing.F) {
	f.Add([]byte(checkSample))
	f.Add([]byte("# configuration is valid\nservices:\n  s:\n    ports: [22]\n    rotate: {length: 3, period: 30s, range: [1]}\n"))
	f.Add([]byte("# configuration is valid\nservices:\n  s:\n    spa: {port: 0, require_source: true}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		svcs, _, err := servicesFromCheck(b, map[string]string{"": "k.key", "ssh": "ssh.key"})
		if err != nil {
			return
		}
		for name, svc := range svcs {
			if _, err := svc.method(); err != nil {
				t.Fatalf("%s accepted without a way to open it: %v", name, err)
			}
		}
	})
}
