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

func decode(t *testing.T, yaml string, env ...string) rules.Config {
	t.Helper()
	c, err := Decode([]byte(yaml), env)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return c
}

func TestDecodeExample(t *testing.T) {
	c := decode(t, string(rules.ExampleYAML))
	d := rules.Defaults()
	if c.Queue != d.Queue {
		t.Errorf("queue = %+v, want %+v", c.Queue, d.Queue)
	}
	if !reflect.DeepEqual(c.Firewall, d.Firewall) {
		t.Errorf("firewall = %+v, want %+v", c.Firewall, d.Firewall)
	}
	if c.Log != d.Log {
		t.Errorf("log = %+v, want %+v", c.Log, d.Log)
	}
	if c.Tracker.MaxPending != 65536 || c.Tracker.MaxGrants != 16384 {
		t.Errorf("tracker = %+v", c.Tracker)
	}
	if len(c.Services) != 1 {
		t.Fatalf("services = %v, want only ssh", c.Services)
	}
	ssh, ok := c.Services["ssh"]
	if !ok {
		t.Fatalf("no ssh service in %v", c.Services)
	}
	if !slices.Equal(ssh.Ports, []int{22}) {
		t.Errorf("ports = %v", ssh.Ports)
	}
	if !slices.Equal(ssh.Sequence, []string{"7000", "8000", "9000/udp"}) {
		t.Errorf("sequence = %q", ssh.Sequence)
	}
	if ssh.StepTimeout != 5*time.Second || ssh.OpenFor != 30*time.Second || ssh.Closed != "reject" {
		t.Errorf("ssh = %+v", ssh)
	}
	if _, err := rules.Compile(c); err != nil {
		t.Errorf("example does not compile: %v", err)
	}
}

func TestDecodeEnvOverrides(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string // the example when empty
		env   []string
		check func(t *testing.T, c rules.Config)
	}{
		{
			name: "queue num",
			env:  []string{"KNOCKWALL_QUEUE_NUM=7"},
			check: func(t *testing.T, c rules.Config) {
				if c.Queue.Num != 7 {
					t.Errorf("queue.num = %d, want 7", c.Queue.Num)
				}
			},
		},
		{
			name: "log level",
			env:  []string{"KNOCKWALL_LOG_LEVEL=debug"},
			check: func(t *testing.T, c rules.Config) {
				if c.Log.Level != "debug" {
					t.Errorf("log.level = %q, want debug", c.Log.Level)
				}
			},
		},
		{
			name: "service open_for",
			env:  []string{"KNOCKWALL_SERVICES_SSH_OPEN_FOR=2m"},
			check: func(t *testing.T, c rules.Config) {
				if got := c.Services["ssh"].OpenFor; got != 2*time.Minute {
					t.Errorf("services.ssh.open_for = %v, want 2m", got)
				}
			},
		},
		{
			name: "service sequence",
			env:  []string{"KNOCKWALL_SERVICES_SSH_SEQUENCE=1,2,3/udp"},
			check: func(t *testing.T, c rules.Config) {
				if got := c.Services["ssh"].Sequence; !slices.Equal(got, []string{"1", "2", "3/udp"}) {
					t.Errorf("services.ssh.sequence = %q, want [1 2 3/udp]", got)
				}
			},
		},
		{
			name: "service ports",
			env:  []string{"KNOCKWALL_SERVICES_SSH_PORTS=22,2222"},
			check: func(t *testing.T, c rules.Config) {
				if got := c.Services["ssh"].Ports; !slices.Equal(got, []int{22, 2222}) {
					t.Errorf("services.ssh.ports = %v, want [22 2222]", got)
				}
			},
		},
		{
			name: "several at once, others untouched",
			env: []string{
				"KNOCKWALL_QUEUE_NUM=7", "KNOCKWALL_QUEUE_COUNT=2", "KNOCKWALL_LOG_FORMAT=json",
				"KNOCKWALL_FIREWALL_MANAGE=false", "KNOCKWALL_TRACKER_MAX_GRANTS=10",
				"KNOCKWALL_SERVICES_SSH_CLOSED=drop", "KNOCKWALL_SERVICES_SSH_STEP_TIMEOUT=1500ms",
			},
			check: func(t *testing.T, c rules.Config) {
				if c.Queue.Num != 7 || c.Queue.Count != 2 || c.Queue.MaxLen != rules.DefaultQueueMaxLen {
					t.Errorf("queue = %+v", c.Queue)
				}
				if c.Log != (rules.LogConfig{Level: "info", Format: "json"}) {
					t.Errorf("log = %+v", c.Log)
				}
				if c.Firewall.Manage {
					t.Error("firewall.manage still true")
				}
				if c.Tracker.MaxGrants != 10 || c.Tracker.MaxPending != 65536 {
					t.Errorf("tracker = %+v", c.Tracker)
				}
				ssh := c.Services["ssh"]
				if ssh.Closed != "drop" || ssh.StepTimeout != 1500*time.Millisecond || ssh.OpenFor != 30*time.Second {
					t.Errorf("ssh = %+v", ssh)
				}
				if !slices.Equal(ssh.Ports, []int{22}) {
					t.Errorf("ssh ports = %v", ssh.Ports)
				}
			},
		},
		{
			name: "value with an equals sign",
			env:  []string{"KNOCKWALL_LOG_FORMAT=a=b"},
			check: func(t *testing.T, c rules.Config) {
				if c.Log.Format != "a=b" {
					t.Errorf("log.format = %q, want a=b", c.Log.Format)
				}
			},
		},
		{
			name: "unrelated and unprefixed variables ignored",
			env:  []string{"QUEUE_NUM=9", "knockwall_queue_num=9", "KNOCKWALLQUEUE_NUM=9", "KNOCKWALL_BOGUS=1", "PATH=/bin", "NOEQUALS"},
			check: func(t *testing.T, c rules.Config) {
				if c.Queue.Num != 0 {
					t.Errorf("queue.num = %d, want 0", c.Queue.Num)
				}
			},
		},
		{
			name: "service absent from the file is not created from env",
			env:  []string{"KNOCKWALL_SERVICES_WEB_PORTS=80"},
			check: func(t *testing.T, c rules.Config) {
				if _, ok := c.Services["web"]; ok || len(c.Services) != 1 {
					t.Errorf("services = %v, want only ssh", c.Services)
				}
			},
		},
		{
			name: "service key left out of the file takes its default",
			yaml: "services:\n  ssh:\n    ports: [22]\n    sequence: [7000, 8000]\n",
			check: func(t *testing.T, c rules.Config) {
				ssh := c.Services["ssh"]
				sd := rules.ServiceDefaults()
				if ssh.StepTimeout != sd.StepTimeout || ssh.OpenFor != sd.OpenFor || ssh.Closed != sd.Closed {
					t.Errorf("ssh = %+v, want the service defaults", ssh)
				}
				if ssh.SPA.MaxSkew != sd.SPA.MaxSkew || ssh.Rotate.Period != sd.Rotate.Period {
					t.Errorf("ssh spa/rotate = %+v / %+v, want defaults", ssh.SPA, ssh.Rotate)
				}
				if c.Queue != rules.Defaults().Queue || c.Log != rules.Defaults().Log {
					t.Errorf("sections left out: queue %+v log %+v, want defaults", c.Queue, c.Log)
				}
			},
		},
		{
			name: "service key left out of the file, overridden from env",
			yaml: "services:\n  ssh:\n    ports: [22]\n    sequence: [7000, 8000]\n",
			env:  []string{"KNOCKWALL_SERVICES_SSH_STEP_TIMEOUT=9s", "KNOCKWALL_SERVICES_SSH_OPEN_FOR=1h", "KNOCKWALL_SERVICES_SSH_CLOSED=drop"},
			check: func(t *testing.T, c rules.Config) {
				ssh := c.Services["ssh"]
				if ssh.StepTimeout != 9*time.Second || ssh.OpenFor != time.Hour || ssh.Closed != "drop" {
					t.Errorf("ssh = %+v", ssh)
				}
			},
		},
		{
			name: "section left out of the file, overridden from env",
			yaml: "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n",
			env:  []string{"KNOCKWALL_LOG_FORMAT=json", "KNOCKWALL_QUEUE_MAX_LEN=100"},
			check: func(t *testing.T, c rules.Config) {
				if c.Log.Format != "json" || c.Queue.MaxLen != 100 {
					t.Errorf("log %+v queue %+v", c.Log, c.Queue)
				}
			},
		},
		{
			name: "nested service key left out, overridden from env",
			yaml: "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n",
			env:  []string{"KNOCKWALL_SERVICES_SSH_SPA_PORT=62201", "KNOCKWALL_SERVICES_SSH_SPA_MAX_SKEW=10s"},
			check: func(t *testing.T, c rules.Config) {
				spa := c.Services["ssh"].SPA
				if spa.Port != 62201 || spa.MaxSkew != 10*time.Second {
					t.Errorf("ssh spa = %+v", spa)
				}
			},
		},
		{
			name: "two services, override one",
			yaml: "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n  web:\n    ports: [443]\n    sequence: [8000]\n",
			env:  []string{"KNOCKWALL_SERVICES_WEB_OPEN_FOR=5m"},
			check: func(t *testing.T, c rules.Config) {
				if got := c.Services["web"].OpenFor; got != 5*time.Minute {
					t.Errorf("web open_for = %v", got)
				}
				if got := c.Services["ssh"].OpenFor; got != rules.DefaultOpenFor {
					t.Errorf("ssh open_for = %v", got)
				}
			},
		},
		{
			name: "service name with underscore",
			yaml: "services:\n  my_ssh:\n    ports: [22]\n    sequence: [7000]\n",
			env:  []string{"KNOCKWALL_SERVICES_MY_SSH_OPEN_FOR=3m"},
			check: func(t *testing.T, c rules.Config) {
				if got := c.Services["my_ssh"].OpenFor; got != 3*time.Minute {
					t.Errorf("my_ssh open_for = %v", got)
				}
			},
		},
		{
			name: "env wins over the file",
			yaml: "log:\n  level: warn\nservices:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n    open_for: 10s\n",
			env:  []string{"KNOCKWALL_LOG_LEVEL=error", "KNOCKWALL_SERVICES_SSH_OPEN_FOR=20s"},
			check: func(t *testing.T, c rules.Config) {
				if c.Log.Level != "error" || c.Services["ssh"].OpenFor != 20*time.Second {
					t.Errorf("log.level %q open_for %v", c.Log.Level, c.Services["ssh"].OpenFor)
				}
			},
		},
		{
			name: "the file wins over defaults",
			yaml: "queue:\n  num: 3\nservices:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n    closed: drop\n",
			check: func(t *testing.T, c rules.Config) {
				if c.Queue.Num != 3 || c.Queue.Count != 1 || c.Services["ssh"].Closed != "drop" {
					t.Errorf("queue %+v closed %q", c.Queue, c.Services["ssh"].Closed)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := tt.yaml
			if yaml == "" {
				yaml = string(rules.ExampleYAML)
			}
			tt.check(t, decode(t, yaml, tt.env...))
		})
	}
}

func TestDecodeOverridesCompile(t *testing.T) {
	// The overridden example still compiles to what the overrides say.
	c := decode(t, string(rules.ExampleYAML),
		"KNOCKWALL_SERVICES_SSH_SEQUENCE=1,2,3/udp", "KNOCKWALL_SERVICES_SSH_PORTS=22,2222")
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []rules.Knock{{Proto: rules.ProtoTCP, Port: 1}, {Proto: rules.ProtoTCP, Port: 2}, {Proto: rules.ProtoUDP, Port: 3}}
	if got := set.Services[0].Sequence; !slices.Equal(got, want) {
		t.Errorf("sequence = %v, want %v", got, want)
	}
	if got := set.ProtectedPorts(); !slices.Equal(got, []uint16{22, 2222}) {
		t.Errorf("ports = %v", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	const svc = "services:\n  ssh:\n    ports: [22]\n    sequence: [7000]\n"
	tests := []struct {
		name    string
		yaml    string
		env     []string
		wantKey string // a *rules.KeyError with this key, when set
		wantMsg string // a part of the message
	}{
		{name: "unknown top-level key", yaml: "bogus: 1\n" + svc, wantKey: "bogus", wantMsg: "unknown key"},
		{name: "unknown key in a section", yaml: "queue:\n  bogus: 1\n" + svc, wantKey: "queue.bogus"},
		{name: "misspelt section key", yaml: "tracker:\n  max_pendign: 1\n" + svc, wantKey: "tracker.max_pendign"},
		{name: "unknown key under a service", yaml: svc + "    bogus: 1\n", wantKey: "services.ssh.bogus", wantMsg: "unknown key"},
		{name: "unknown key under a service's spa", yaml: svc + "    spa:\n      bogus: 1\n", wantKey: "services.ssh.spa.bogus"},
		{name: "section is a scalar", yaml: "queue: 5\n" + svc, wantKey: "queue", wantMsg: "mapping"},
		{name: "services is a list", yaml: "services: [ssh]\n", wantKey: "services", wantMsg: "mapping"},
		{name: "service is a scalar", yaml: "services:\n  ssh: 5\n", wantKey: "services.ssh", wantMsg: "mapping"},
		{name: "port is not a number", yaml: "services:\n  ssh:\n    ports: [ssh]\n    sequence: [7000]\n", wantMsg: "ports"},
		{name: "bad duration in file", yaml: svc + "    open_for: forever\n", wantMsg: "open_for"},
		{name: "bad number from env", yaml: svc, env: []string{"KNOCKWALL_QUEUE_NUM=seven"}, wantMsg: "queue.num"},
		{name: "bad duration from env", yaml: svc, env: []string{"KNOCKWALL_SERVICES_SSH_OPEN_FOR=2 fortnights"}, wantMsg: "open_for"},
		{name: "not yaml: unclosed flow", yaml: "queue: [1, 2\n", wantMsg: "yaml"},
		{name: "not yaml: top-level list", yaml: "- a\n- b\n", wantMsg: "yaml"},
		{name: "not yaml: tab indentation", yaml: "queue:\n\tnum: 1\n", wantMsg: "yaml"},
		{name: "not yaml: json array", yaml: `["queue"]`, wantMsg: "yaml"},
		{name: "not yaml: binary", yaml: "\x00\x01\x02\xff\xfe", wantMsg: "yaml"},
		{name: "not yaml: bad indentation", yaml: "queue:\n  num: 1\n count: 2\n", wantMsg: "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode([]byte(tt.yaml), tt.env)
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", c)
			}
			if !errors.Is(err, rules.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			if tt.wantKey != "" {
				var ke *rules.KeyError
				if !errors.As(err, &ke) {
					t.Fatalf("error %v (%T) is not a *rules.KeyError", err, err)
				}
				if ke.Key != tt.wantKey {
					t.Errorf("key = %q, want %q", ke.Key, tt.wantKey)
				}
				if !strings.Contains(err.Error(), tt.wantKey) {
					t.Errorf("message %q does not name %q", err, tt.wantKey)
				}
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestDecodeEmpty(t *testing.T) {
	// An empty file is valid YAML: every key takes its default, and Compile
	// then says that a service is missing.
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n"} {
		t.Run(strings.TrimSpace(in), func(t *testing.T) {
			c := decode(t, in, "KNOCKWALL_LOG_LEVEL=warn")
			if c.Queue != rules.Defaults().Queue || c.Log.Level != "warn" {
				t.Errorf("queue %+v log %+v", c.Queue, c.Log)
			}
			_, err := rules.Compile(c)
			var ke *rules.KeyError
			if !errors.As(err, &ke) || ke.Key != "services" {
				t.Errorf("Compile = %v, want a KeyError for services", err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		flag string
		env  map[string]string
		want string
	}{
		{name: "flag wins", flag: "/tmp/a.yaml", env: map[string]string{"KNOCKWALL_CONFIG": "/tmp/b.yaml"}, want: "/tmp/a.yaml"},
		{name: "flag alone", flag: "a.yaml", want: "a.yaml"},
		{name: "env", env: map[string]string{"KNOCKWALL_CONFIG": "/tmp/b.yaml"}, want: "/tmp/b.yaml"},
		{name: "empty env", env: map[string]string{"KNOCKWALL_CONFIG": ""}, want: DefaultPath},
		{name: "default", want: DefaultPath},
		{name: "other variables ignored", env: map[string]string{"CONFIG": "/x", "KNOCKWALL_CONF": "/y"}, want: DefaultPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			if got := Resolve(tt.flag, getenv); got != tt.want {
				t.Errorf("Resolve(%q) = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
	if DefaultPath != "/etc/knockwall/knockwall.yaml" {
		t.Errorf("DefaultPath = %q", DefaultPath)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("services:\n  web:\n    ports: [443]\n    sequence: [1000, 2000]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("bogus: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")

	tests := []struct {
		name        string
		src         Source
		env         []string
		wantErr     bool
		wantInvalid bool
		wantMsg     []string
		check       func(t *testing.T, c rules.Config)
	}{
		{name: "file", src: Source{Path: good}, env: []string{"KNOCKWALL_SERVICES_WEB_OPEN_FOR=1m"}, check: func(t *testing.T, c rules.Config) {
			if w := c.Services["web"]; !slices.Equal(w.Ports, []int{443}) || w.OpenFor != time.Minute {
				t.Errorf("web = %+v", w)
			}
		}},
		{name: "example", src: Source{Example: true, Path: missing}, check: func(t *testing.T, c rules.Config) {
			if _, ok := c.Services["ssh"]; !ok {
				t.Errorf("services = %v, want the example's ssh", c.Services)
			}
		}},
		{name: "missing file", src: Source{Path: missing}, wantErr: true, wantInvalid: true,
			wantMsg: []string{missing, "does not exist", "-c", "KNOCKWALL_CONFIG", "--example"}},
		{name: "invalid file", src: Source{Path: bad}, wantErr: true, wantInvalid: true, wantMsg: []string{"bogus"}},
		{name: "directory", src: Source{Path: dir}, wantErr: true, wantMsg: []string{"read config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.src, tt.env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Load = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if got := errors.Is(err, rules.ErrInvalid); got != tt.wantInvalid {
					t.Errorf("errors.Is(%v, ErrInvalid) = %v, want %v", err, got, tt.wantInvalid)
				}
				for _, m := range tt.wantMsg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("message %q does not contain %q", err, m)
					}
				}
				return
			}
			tt.check(t, c)
		})
	}
}

func TestEnvMap(t *testing.T) {
	got := envMap([]string{"KNOCKWALL_A=1", "KNOCKWALL_B=x=y", "OTHER=2", "KNOCKWALL_C", "KNOCKWALL_D="})
	want := map[string]string{"KNOCKWALL_A": "1", "KNOCKWALL_B": "x=y", "KNOCKWALL_D": ""}
	if len(got) != len(want) {
		t.Fatalf("envMap = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("envMap[%q] = %q, want %q", k, got[k], v)
		}
	}
}
