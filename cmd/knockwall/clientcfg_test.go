package main

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestClientConfigPaths: where each system's client looks, in order, from
// its environment alone.
func TestClientConfigPaths(t *testing.T) {
	j := filepath.Join
	tests := []struct {
		goos string
		env  map[string]string
		want []string
	}{
		{"linux", map[string]string{"HOME": "/home/u"}, []string{j("/home/u", ".config", "knockwall", "client.yaml")}},
		{"linux", map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, []string{j("/x", "knockwall", "client.yaml")}},
		// A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
		{"linux", map[string]string{"HOME": "/home/u", "XDG_CONFIG_HOME": "rel"}, []string{j("/home/u", ".config", "knockwall", "client.yaml")}},
		{"freebsd", map[string]string{"HOME": "/usr/home/u"}, []string{j("/usr/home/u", ".config", "knockwall", "client.yaml")}},
		{"darwin", map[string]string{"HOME": "/Users/u"}, []string{
			j("/Users/u", "Library", "Application Support", "knockwall", "client.yaml"),
			j("/Users/u", ".config", "knockwall", "client.yaml"),
		}},
		{"windows", map[string]string{"AppData": `C:\Users\u\AppData\Roaming`, "HOME": "/ignored"}, []string{j(`C:\Users\u\AppData\Roaming`, "knockwall", "client.yaml")}},
		{"windows", map[string]string{}, nil},
		{"linux", map[string]string{}, nil},
	}
	for _, tt := range tests {
		got := clientConfigPaths(tt.goos, func(k string) string { return tt.env[k] })
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s %v: %q, want %q", tt.goos, tt.env, got, tt.want)
		}
	}
	// The first that exists is taken: on macOS, ~/.config when Application
	// Support has none.
	env := func(k string) string { return map[string]string{"HOME": "/Users/u"}[k] }
	dotConfig := j("/Users/u", ".config", "knockwall", "client.yaml")
	if got := clientConfigAt("darwin", env, func(p string) bool { return p == dotConfig }); got != dotConfig {
		t.Errorf("darwin with only ~/.config: %q", got)
	}
	if got := clientConfigAt("darwin", env, func(string) bool { return false }); got != "" {
		t.Errorf("darwin with none: %q", got)
	}
}

const goodClientConfig = `servers:
  lab:
    host: 127.0.0.1
    default: web
    services:
      web:
        ports: [8443]
        sequence: [7000, 8000/tcp, 9000/udp]
      ssh:
        ports: [22]
        spa: {port: 62201, key_file: ssh.key}
      git:
        ports: [9418]
        rotate: {key_file: ssh.key, length: 3, period: 30s, range: [20000, 40000]}
      both:
        method: spa
        spa: {key_file: ssh.key, transport: syn}
        rotate: {length: 2, period: 1m, range: [20000, 20001]}
        ports: [2222]
`

// TestDecodeClientConfig: the client config is decoded strictly: unknown
// keys and settings that cannot work are refused with their place.
func TestDecodeClientConfig(t *testing.T) {
	c, err := decodeClientConfig([]byte(goodClientConfig))
	if err != nil {
		t.Fatal(err)
	}
	lab := c.Servers["lab"]
	for name, want := range map[string]string{"web": methodSequence, "ssh": methodSPA, "git": methodRotate, "both": methodSPA} {
		svc := lab.Services[name]
		if m, err := svc.method(); m != want || err != nil {
			t.Errorf("%s: method %q, %v; want %s", name, m, err, want)
		}
	}
	bad := []struct{ name, yaml, want string }{
		{"unknown top key", "servers: {a: {services: {s: {sequence: [1]}}}}\nextra: 1\n", "field extra not found"},
		{"unknown server key", "servers: {a: {hots: x, services: {s: {sequence: [1]}}}}\n", "field hots not found"},
		{"unknown service key", "servers: {a: {services: {s: {sequence: [1], open_for: 30s}}}}\n", "field open_for not found"},
		{"unknown spa key", "servers: {a: {services: {s: {spa: {port: 1, key_file: k, max_skew: 1s}}}}}\n", "field max_skew not found"},
		{"empty", "", "names no servers"},
		{"no servers", "servers: {}\n", "names no servers"},
		{"no services", "servers: {a: {host: x}}\n", "servers.a: services: none"},
		{"nothing opens", "servers: {a: {services: {s: {ports: [22]}}}}\n", "servers.a: services.s: neither sequence"},
		{"two ways, no method", "servers: {a: {services: {s: {sequence: [1], spa: {port: 1, key_file: k}}}}}\n", "say which"},
		{"method without section", "servers: {a: {services: {s: {method: rotate, sequence: [1]}}}}\n", `method: "rotate" needs`},
		{"bad knock", "servers: {a: {services: {s: {sequence: [70000]}}}}\n", "sequence[0]"},
		{"bad port", "servers: {a: {services: {s: {ports: [0], sequence: [1]}}}}\n", "ports[0]"},
		{"spa without key", "servers: {a: {services: {s: {spa: {port: 1}}}}}\n", "spa.key_file: missing"},
		{"spa udp without port", "servers: {a: {services: {s: {spa: {key_file: k}}}}}\n", "spa.port: missing"},
		{"spa syn without ports", "servers: {a: {services: {s: {spa: {key_file: k, transport: syn}}}}}\n", "set ports"},
		{"bad transport", "servers: {a: {services: {s: {spa: {key_file: k, port: 1, transport: tcp}}}}}\n", "spa.transport"},
		{"rotate without key", "servers: {a: {services: {s: {rotate: {length: 3, period: 30s, range: [1, 9]}}}}}\n", "rotate.key_file"},
		{"rotate period", "servers: {a: {services: {s: {rotate: {key_file: k, length: 3, period: 1500ms, range: [1, 9]}}}}}\n", "rotate.period"},
		{"rotate range", "servers: {a: {services: {s: {rotate: {key_file: k, length: 3, period: 30s, range: [9, 1]}}}}}\n", "rotate.range"},
		{"bad source", "servers: {a: {source: home, services: {s: {sequence: [1]}}}}\n", "servers.a: source"},
		{"bad default", "servers: {a: {default: x, services: {s: {sequence: [1]}}}}\n", `default: "x"`},
		{"not yaml", "servers: [\n", "yaml"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeClientConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
		})
	}
}

// TestClientConfigPick: a server is found by its name or its host, and a
// service by name, by the port connected to, by default, or as the only
// one.
func TestClientConfigPick(t *testing.T) {
	c, err := decodeClientConfig([]byte(goodClientConfig + `  solo:
    services:
      only: {sequence: [1, 2, 3]}
  twin:
    host: 127.0.0.1
    services:
      a: {sequence: [1]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if name, _, err := c.lookup("solo"); name != "solo" || err != nil {
		t.Errorf("by name: %q %v", name, err)
	}
	if _, _, err := c.lookup("127.0.0.1"); err == nil || !strings.Contains(err.Error(), "lab and twin") {
		t.Errorf("two servers on one host: %v", err)
	}
	if _, _, err := c.lookup("nowhere"); err == nil || !strings.Contains(err.Error(), "lab, solo, twin") {
		t.Errorf("unknown: %v", err)
	}
	delete(c.Servers, "twin")
	name, lab, err := c.lookup("127.0.0.1")
	if name != "lab" || err != nil {
		t.Fatalf("by host: %q %v", name, err)
	}
	for _, tt := range []struct {
		service string
		port    int
		want    string
	}{
		{"ssh", 0, "ssh"},
		{"", 22, "ssh"},
		{"", 9418, "git"},
		{"ssh", 9418, "ssh"}, // --service wins over the port
		{"", 0, "web"},       // the default
		{"", 12345, "web"},   // no service names the port: the default
	} {
		got, _, err := lab.pick("lab", tt.service, tt.port)
		if got != tt.want || err != nil {
			t.Errorf("pick(%q, %d) = %q, %v; want %s", tt.service, tt.port, got, err, tt.want)
		}
	}
	if _, _, err := lab.pick("lab", "nope", 0); err == nil {
		t.Error("an unknown service was picked")
	}
	solo := c.Servers["solo"]
	if got, _, err := solo.pick("solo", "", 0); got != "only" || err != nil {
		t.Errorf("the only service: %q %v", got, err)
	}
	if solo.host("solo") != "solo" || lab.host("lab") != "127.0.0.1" {
		t.Errorf("host: %q %q", solo.host("solo"), lab.host("lab"))
	}
	noDefault := *lab
	noDefault.Default = ""
	if _, _, err := noDefault.pick("lab", "", 0); err == nil || !strings.Contains(err.Error(), "give --service") {
		t.Errorf("several services, no default: %v", err)
	}
}

// TestKeyPathResolver: key files are named relative to the client config,
// or to the home directory with ~/.
func TestKeyPathResolver(t *testing.T) {
	home := t.TempDir()
	r := keyPathResolver(filepath.Join(home, "cfg", "client.yaml"), environment{"HOME=" + home, "USERPROFILE=" + home})
	abs, _ := filepath.Abs("/etc/k.key")
	for in, want := range map[string]string{
		"k.key":        filepath.Join(home, "cfg", "k.key"),
		"sub/k.key":    filepath.Join(home, "cfg", "sub", "k.key"),
		"~/keys/k":     filepath.Join(home, "keys", "k"),
		abs:            abs,
		"~other/k.key": filepath.Join(home, "cfg", "~other", "k.key"),
	} {
		if got := r(in); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}

// newClientConfigFile writes a client config into dir, mode 0600, with
// the key file ssh.key beside it.
func newClientConfigFile(t *testing.T, dir, body string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, nil, "keygen", filepath.Join(dir, "ssh.key")); code != 0 {
		t.Fatalf("keygen: %s", errOut)
	}
	p := filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKnockClientConfig: `knockwall knock SERVER` takes everything from the
// client config in the user's config directory, and -c wins over it. The
// knocks go to 127.0.0.1 (the servers' host), where nothing listens.
func TestKnockClientConfig(t *testing.T) {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "AppData=" + filepath.Join(home, ".config")}
	if p := clientConfigPaths(runtime.GOOS, environment(env).get); len(p) > 0 {
		newClientConfigFile(t, filepath.Dir(p[0]), goodClientConfig)
	}
	other := newClientConfigFile(t, filepath.Join(home, "other"), `servers:
  lab:
    host: 127.0.0.1
    services:
      web: {sequence: [7100, 7200]}
`)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stdout, or stderr when code != 0
	}{
		{"default service", []string{"knock", "lab"}, 0, "knocked 127.0.0.1: 7000/tcp 8000/tcp 9000/udp"},
		{"by host", []string{"knock", "127.0.0.1"}, 0, "knocked 127.0.0.1: 7000/tcp 8000/tcp 9000/udp"},
		{"spa", []string{"knock", "lab", "--service", "ssh"}, 0, "sent SPA token for ssh to 127.0.0.1 udp/62201"},
		{"rotate", []string{"knock", "lab", "--service", "git"}, 0, "knocked 127.0.0.1: "},
		{"-c wins", []string{"knock", "lab", "-c", other}, 0, "knocked 127.0.0.1: 7100/tcp 7200/tcp"},
		{"--method picks another way", []string{"knock", "lab", "--service", "both", "--method", "rotate", "--delay", "0"}, 0, "knocked 127.0.0.1: 2000"},
		{"--method needs its section", []string{"knock", "lab", "--service", "ssh", "--method", "rotate"}, 2, `method: "rotate" needs its section`},
		{"--method unknown", []string{"knock", "lab", "--method", "magic"}, 2, `method: "magic" needs`},
		{"unknown server", []string{"knock", "nowhere"}, 2, "names no server nowhere"},
		{"unknown service", []string{"knock", "lab", "--service", "x"}, 2, "has no service x"},
		{"missing -c", []string{"knock", "lab", "-c", filepath.Join(home, "nope.yaml")}, 2, "nope.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, env, tt.args...)
			got := out
			if tt.code != 0 {
				got = errOut
			}
			if code != tt.code || !strings.Contains(got, tt.want) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tt.code, out, errOut, tt.want)
			}
		})
	}
	// Without any client config (and, on Linux, without --service for a
	// server's config) nothing is sent, and the message says where the
	// client config was looked for.
	code, _, errOut := runCLI(t, []string{"HOME=" + t.TempDir()}, "knock", "lab")
	if code != 2 || !strings.Contains(errOut, "client.yaml") || !strings.Contains(errOut, "client init") {
		t.Errorf("no client config: exit %d, %s", code, errOut)
	}
}
