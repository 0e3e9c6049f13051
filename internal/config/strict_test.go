package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
)

// TestDecodeStrict: what the YAML reader refuses, each with the key and
// the line in the message.
func TestDecodeStrict(t *testing.T) {
	const svc = "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n"
	tests := []struct {
		name    string
		yaml    string
		wantKey string
		wantMsg []string
	}{
		{name: "unknown key, its line", yaml: svc + "queue:\n  num: 1\n  bogus: 2\n", wantKey: "queue.bogus", wantMsg: []string{"unknown key", "line 7"}},
		{name: "keys are case-sensitive", yaml: "Queue:\n  num: 1\n" + svc, wantKey: "Queue", wantMsg: []string{"unknown key", "line 1"}},
		{name: "duplicate top-level key", yaml: "queue: {num: 1}\n" + svc + "queue: {num: 2}\n", wantKey: "queue", wantMsg: []string{"given twice", "lines 1 and 6"}},
		{name: "duplicate key in a service", yaml: svc + "    ports: [23]\n", wantKey: "services.ssh.ports", wantMsg: []string{"given twice", "lines 3 and 5"}},
		{name: "duplicate service", yaml: svc + "  ssh:\n    ports: [23]\n", wantKey: "services.ssh", wantMsg: []string{"given twice", "lines 2 and 5"}},
		{name: "bad value names its line", yaml: svc + "    open_for: forever\n", wantKey: "services.ssh.open_for", wantMsg: []string{"line 5"}},
		{name: "bad list element names its line", yaml: "services:\n  ssh:\n    sequence: [7000]\n    ports: [22, ssh]\n", wantKey: "services.ssh.ports[1]", wantMsg: []string{"line 4"}},
		{name: "a key that is a list", yaml: "[a]: 1\n" + svc, wantMsg: []string{"plain name", "line 1"}},
		{name: "merge of a scalar", yaml: "services:\n  ssh:\n    <<: 5\n", wantKey: "services.ssh", wantMsg: []string{"merge key"}},
		{name: "self-merge", yaml: "services:\n  ssh: &a\n    ports: [22]\n    <<: *a\n", wantMsg: []string{"merge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.yaml), nil)
			if !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Decode = %v, want an error wrapping ErrInvalid", err)
			}
			if tt.wantKey != "" {
				var ke *rules.KeyError
				if !errors.As(err, &ke) || ke.Key != tt.wantKey {
					t.Errorf("error %v: want a KeyError for %q", err, tt.wantKey)
				}
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

// TestDecodeSecondDocument: a second document is refused, not ignored.
func TestDecodeSecondDocument(t *testing.T) {
	_, err := Decode([]byte("services: {ssh: {ports: [22], sequence: [7000]}}\n---\nfirewall: {manage: false}\n"), nil)
	if !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), "second document") {
		t.Fatalf("Decode = %v, want a refusal of the second document", err)
	}
}

// TestDecodeServiceNames: service names are kept as written (SSH is not
// ssh), the environment reaches them by their upper-case form, and two
// services that one variable would name are refused rather than guessed.
func TestDecodeServiceNames(t *testing.T) {
	c := decode(t, "services:\n  SSH:\n    ports: [22]\n    sequence: [7000]\n  Web.1:\n    ports: [443]\n    sequence: [8000]\n",
		"KNOCKWALL_SERVICES_SSH_OPEN_FOR=2m", "KNOCKWALL_SERVICES_WEB.1_CLOSED=drop")
	if _, ok := c.Services["ssh"]; ok {
		t.Errorf("services = %v: SSH was lower-cased", c.Services)
	}
	if got := c.Services["SSH"].OpenFor; got != 2*time.Minute {
		t.Errorf("SSH open_for = %v, want 2m from the environment", got)
	}
	if got := c.Services["Web.1"].Closed; got != "drop" {
		t.Errorf("Web.1 closed = %q, want drop", got)
	}
	_, rep, err := LoadReport(Source{Path: writeFile(t, "services:\n  Web.1:\n    ports: [443]\n    sequence: [8000]\n")}, []string{"KNOCKWALL_SERVICES_WEB.1_CLOSED=drop"})
	if err != nil || !slices.Equal(rep.Overrides, []string{"services.Web.1.closed"}) || rep.Variables["services.Web.1.closed"] != "KNOCKWALL_SERVICES_WEB.1_CLOSED" {
		t.Errorf("report %+v, %v; want the override and its variable as set", rep, err)
	}

	both := "services:\n  SSH:\n    ports: [22]\n    sequence: [7000]\n  ssh:\n    ports: [23]\n    sequence: [8000]\n"
	if _, err := Decode([]byte(both), nil); err != nil {
		t.Fatalf("SSH and ssh are two services: %v", err)
	}
	_, err = Decode([]byte(both), []string{"KNOCKWALL_SERVICES_SSH_OPEN_FOR=2m"})
	if !errors.Is(err, rules.ErrInvalid) || !strings.Contains(err.Error(), "services.SSH.open_for") || !strings.Contains(err.Error(), "services.ssh.open_for") {
		t.Fatalf("Decode = %v, want a refusal naming both keys", err)
	}
}

// TestDecodeMerge: YAML merge keys share settings between services; a key
// written in the service wins.
func TestDecodeMerge(t *testing.T) {
	c := decode(t, `services:
  ssh: &d
    ports: [22]
    sequence: [7000, 8000, 9000]
    open_for: 1m
    closed: drop
  web:
    <<: *d
    ports: [443]
`)
	web := c.Services["web"]
	if !slices.Equal(web.Ports, []int{443}) || !slices.Equal(web.Sequence, []string{"7000", "8000", "9000"}) || web.OpenFor != time.Minute || web.Closed != "drop" {
		t.Errorf("web = %+v, want ssh's settings but its own ports", web)
	}
	if ssh := c.Services["ssh"]; !slices.Equal(ssh.Ports, []int{22}) {
		t.Errorf("ssh = %+v", ssh)
	}
}

// TestEveryKeyOverridable: every leaf key of the model, found from the
// struct tags, has its variable, and a value given there reaches the
// Config (the variable is not silently ignored).
func TestEveryKeyOverridable(t *testing.T) {
	keys := overrideKeys([]string{"ssh"})
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.String()
	}
	for _, want := range []string{"queue.num", "firewall.fast_path", "metrics.listen", "control.socket", "state.file",
		"services.ssh.open_for", "services.ssh.spa.key_file", "services.ssh.fwknop.max_age", "services.ssh.rotate.range"} {
		if !slices.Contains(names, want) {
			t.Errorf("no override for %s in %v", want, names)
		}
	}
	const file = "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n"
	for _, k := range keys {
		t.Run(k.String(), func(t *testing.T) {
			base, err := Decode([]byte(file), nil)
			if err != nil {
				t.Fatal(err)
			}
			changed := false
			for _, val := range sampleValues(t, k) {
				c, p, err := decodeEnv([]byte(file), []string{envName(k) + "=" + val})
				if err != nil {
					t.Fatalf("%s=%s: %v", envName(k), val, err)
				}
				if !slices.Equal(p.overrides, []string{k.String()}) || p.fromEnv[k.String()] != envName(k) {
					t.Errorf("overrides %v by %v, want [%s] by %s", p.overrides, p.fromEnv, k, envName(k))
				}
				changed = changed || !reflect.DeepEqual(c, base)
			}
			if !changed {
				t.Errorf("%s changed nothing", envName(k))
			}
		})
	}
}

// sampleValues are values for key k of which one at least differs from
// its default.
func sampleValues(t *testing.T, k keyPath) []string {
	t.Helper()
	rt := reflect.TypeFor[rules.Config]()
	for i, name := range k {
		if rt.Kind() == reflect.Map {
			rt = rt.Elem()
			continue
		}
		f, ok := fieldsOf(rt)[name]
		if !ok {
			t.Fatalf("%s: no field %s", k, name)
		}
		rt = f.Type
		if i == len(k)-1 {
			break
		}
	}
	switch {
	case rt == reflect.TypeFor[time.Duration]():
		return []string{"17s"}
	case rt.Kind() == reflect.Bool:
		return []string{"true", "false"}
	case rt.Kind() == reflect.String:
		return []string{"x-sample"}
	case rt.Kind() == reflect.Slice:
		return []string{"7,8"}
	case rt.Kind() == reflect.Float64:
		return []string{"3.5"}
	default:
		return []string{"1234567"}
	}
}

// TestTagsAgree: the yaml tag is what the decoder reads; a mapstructure
// tag, where a field has one, must say the same, so no reader of the
// struct is misled.
func TestTagsAgree(t *testing.T) {
	var walk func(rt reflect.Type)
	walk = func(rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			y := tagName(f)
			if y == "" {
				t.Errorf("%s.%s has no yaml tag: it cannot be configured", rt.Name(), f.Name)
			}
			if m, ok := f.Tag.Lookup("mapstructure"); ok && m != y {
				t.Errorf("%s.%s: mapstructure tag %q, yaml tag %q", rt.Name(), f.Name, m, y)
			}
			switch f.Type.Kind() {
			case reflect.Struct:
				walk(f.Type)
			case reflect.Map:
				walk(f.Type.Elem())
			}
		}
	}
	walk(reflect.TypeFor[rules.Config]())
}

// TestFileMode: a config file that group or others may write, or that
// another user owns, is refused with a message naming the file and its
// mode; one that is only readable by others is taken.
func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	body := []byte("services:\n  ssh:\n    ports: [22]\n    sequence: [7000, 8000, 9000]\n")
	write := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name    string
		mode    os.FileMode
		wantErr bool
	}{
		{"0600", 0o600, false},
		{"0644", 0o644, false},
		{"0400", 0o400, false},
		{"0620", 0o620, true},
		{"0602", 0o602, true},
		{"0666", 0o666, true},
		{"0777", 0o777, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write(tt.name+".yaml", tt.mode)
			_, rep, err := LoadReport(Source{Path: p}, nil)
			if !tt.wantErr {
				if err != nil || rep.Mode != tt.mode {
					t.Fatalf("LoadReport = %v, mode %v; want it taken with mode %v", err, rep.Mode, tt.mode)
				}
				return
			}
			if !errors.Is(err, ErrFileMode) || !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("LoadReport = %v, want ErrFileMode and ErrInvalid", err)
			}
			for _, m := range []string{p, "mode 0" + strings.TrimPrefix(tt.name, "0"), "chmod 600"} {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}

	t.Run("symlink to a good file", func(t *testing.T) {
		link := filepath.Join(dir, "link.yaml")
		if err := os.Symlink(write("target.yaml", 0o600), link); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(Source{Path: link}, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("symlink to a writable file", func(t *testing.T) {
		link := filepath.Join(dir, "badlink.yaml")
		if err := os.Symlink(write("badtarget.yaml", 0o666), link); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(Source{Path: link}, nil); !errors.Is(err, ErrFileMode) {
			t.Fatalf("Load = %v, want ErrFileMode", err)
		}
	})
	t.Run("the example is exempt", func(t *testing.T) {
		if _, err := Load(Source{Example: true, Path: write("ignored.yaml", 0o666)}, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// writeFile writes body to a fresh file, mode 0600, and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "knockwall.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
