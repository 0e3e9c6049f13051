package rules_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
)

// keyReader serves fixed keys by path, as spa.ReadKeyFile would from disk.
func keyReader(t *testing.T) rules.Option {
	t.Helper()
	keys := map[string]*spa.Key{}
	for i, path := range []string{"a.key", "b.key"} {
		k, err := spa.NewKey(bytes.Repeat([]byte{byte(i + 1)}, spa.MinKeySize))
		if err != nil {
			t.Fatal(err)
		}
		keys[path] = k
	}
	return rules.WithKeyReader(func(path string) (*spa.Key, error) {
		if k, ok := keys[path]; ok {
			return k, nil
		}
		return nil, errors.New("no such key file")
	})
}

func spaService() rules.ServiceConfig {
	s := rules.ServiceDefaults()
	s.Ports = []int{22}
	s.SPA.Port = 62201
	s.SPA.KeyFile = "a.key"
	return s
}

func TestCompileSPAAndRotate(t *testing.T) {
	tests := []struct {
		name    string
		svc     func(s *rules.ServiceConfig)
		other   *rules.ServiceConfig // a second service, "web"
		wantKey string               // "" for valid
		wantMsg string
	}{
		{name: "spa only", svc: func(s *rules.ServiceConfig) {}},
		{name: "spa with a second key", svc: func(s *rules.ServiceConfig) { s.SPA.KeyFiles = []string{"b.key"} }},
		{name: "spa in SYNs only", svc: func(s *rules.ServiceConfig) { s.SPA.Port = 0 }},
		{name: "rotate with the spa key", svc: func(s *rules.ServiceConfig) {
			s.Rotate = rules.RotateConfig{Length: 3, Period: 30 * time.Second, Range: []int{20000, 40000}}
		}},
		{name: "rotate alone with its own key", svc: func(s *rules.ServiceConfig) {
			s.SPA = rules.SPAConfig{}
			s.Rotate = rules.RotateConfig{KeyFile: "b.key", Length: 3, Period: 30 * time.Second, Range: []int{20000, 40000}}
		}},
		{name: "nothing opens it", svc: func(s *rules.ServiceConfig) { s.SPA = rules.SPAConfig{} },
			wantKey: "services.ssh.sequence", wantMsg: "nothing opens"},
		{name: "spa port without key", svc: func(s *rules.ServiceConfig) { s.SPA.KeyFile = "" },
			wantKey: "services.ssh.spa.key_file"},
		{name: "spa requiring a bound source", svc: func(s *rules.ServiceConfig) { s.SPA.RequireSource = true }},
		{name: "require_source without key", svc: func(s *rules.ServiceConfig) {
			s.Sequence = []string{"7000", "8000", "9000"}
			s.SPA = rules.SPAConfig{RequireSource: true}
		}, wantKey: "services.ssh.spa.key_file", wantMsg: "spa needs a key_file"},
		{name: "unreadable key", svc: func(s *rules.ServiceConfig) { s.SPA.KeyFile = "missing.key" },
			wantKey: "services.ssh.spa.key_file", wantMsg: "no such key"},
		{name: "same key twice", svc: func(s *rules.ServiceConfig) { s.SPA.KeyFiles = []string{"a.key"} },
			wantKey: "services.ssh.spa.key_files[0]", wantMsg: "same key"},
		{name: "skew under a second", svc: func(s *rules.ServiceConfig) { s.SPA.MaxSkew = 500 * time.Millisecond },
			wantKey: "services.ssh.spa.max_skew"},
		{name: "spa port out of range", svc: func(s *rules.ServiceConfig) { s.SPA.Port = 70000 },
			wantKey: "services.ssh.spa.port"},
		{name: "spa port is the service's own udp knock", svc: func(s *rules.ServiceConfig) {
			s.Sequence = []string{"7000", "62201/udp"}
		}, wantKey: "services.ssh.spa.port", wantMsg: "knock port"},
		{name: "spa port is another service's udp knock", svc: func(s *rules.ServiceConfig) {},
			other:   &rules.ServiceConfig{Ports: []int{443}, Sequence: []string{"62201/udp"}, StepTimeout: time.Second, OpenFor: time.Second, Closed: "reject"},
			wantKey: "services.ssh.spa.port", wantMsg: "web"},
		{name: "rotate without length", svc: func(s *rules.ServiceConfig) { s.Rotate.Range = []int{20000, 40000} },
			wantKey: "services.ssh.rotate.length"},
		{name: "rotate period not whole seconds", svc: func(s *rules.ServiceConfig) {
			s.Rotate = rules.RotateConfig{Length: 3, Period: 1500 * time.Millisecond, Range: []int{20000, 40000}}
		}, wantKey: "services.ssh.rotate.period"},
		{name: "rotate range reversed", svc: func(s *rules.ServiceConfig) {
			s.Rotate = rules.RotateConfig{Length: 3, Period: time.Second, Range: []int{40000, 20000}}
		}, wantKey: "services.ssh.rotate.range"},
		{name: "rotate range holds the protected port", svc: func(s *rules.ServiceConfig) {
			s.Rotate = rules.RotateConfig{Length: 3, Period: time.Second, Range: []int{1, 3000}}
		}, wantKey: "services.ssh.rotate.range", wantMsg: "protected port 22"},
		{name: "rotate range holds a fixed knock", svc: func(s *rules.ServiceConfig) {
			s.Sequence = []string{"30000"}
			s.Rotate = rules.RotateConfig{Length: 3, Period: time.Second, Range: []int{20000, 40000}}
		}, wantKey: "services.ssh.rotate.range", wantMsg: "30000"},
		{name: "rotate without any key", svc: func(s *rules.ServiceConfig) {
			s.SPA = rules.SPAConfig{}
			s.Rotate = rules.RotateConfig{Length: 3, Period: time.Second, Range: []int{20000, 40000}}
		}, wantKey: "services.ssh.rotate.key_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.Defaults()
			svc := spaService()
			tt.svc(&svc)
			c.Services = map[string]rules.ServiceConfig{"ssh": svc}
			if tt.other != nil {
				c.Services["web"] = *tt.other
			}
			set, err := rules.Compile(c, keyReader(t))
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				if set.Services[0].SPA == nil && set.Services[0].Rotate == nil {
					t.Fatal("neither spa nor rotate compiled")
				}
				return
			}
			var ke *rules.KeyError
			if !errors.As(err, &ke) || !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("err = %v, want a *KeyError wrapping ErrInvalid", err)
			}
			if ke.Key != tt.wantKey || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want key %s and %q", err, tt.wantKey, tt.wantMsg)
			}
		})
	}
}

// TestCompileRequireSource: spa.require_source reaches the compiled service,
// and is off unless set.
func TestCompileRequireSource(t *testing.T) {
	for _, want := range []bool{false, true} {
		c := rules.Defaults()
		svc := spaService()
		svc.SPA.RequireSource = want
		c.Services = map[string]rules.ServiceConfig{"ssh": svc}
		set, err := rules.Compile(c, keyReader(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := set.Services[0].SPA.RequireSource; got != want {
			t.Errorf("RequireSource = %v, want %v", got, want)
		}
	}
	if rules.ServiceDefaults().SPA.RequireSource {
		t.Error("require_source is on by default")
	}
}

func TestSPALookups(t *testing.T) {
	c := rules.Defaults()
	svc := spaService()
	svc.SPA.KeyFiles = []string{"b.key"}
	svc.Rotate = rules.RotateConfig{Length: 3, Period: 30 * time.Second, Range: []int{20000, 40000}}
	c.Services = map[string]rules.ServiceConfig{"ssh": svc}
	set, err := rules.Compile(c, keyReader(t))
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := set.SPAService(62201); !ok || i != 0 {
		t.Errorf("SPAService(62201) = %d, %v", i, ok)
	}
	if _, ok := set.SPAService(62202); ok {
		t.Error("SPAService(62202) found a service")
	}
	if i, ok := set.RotatingRange(30000); !ok || i != 0 {
		t.Errorf("RotatingRange(30000) = %d, %v", i, ok)
	}
	if _, ok := set.RotatingRange(40001); ok {
		t.Error("RotatingRange(40001) found a service")
	}
	if i, ok := set.ServiceByName([]byte("ssh")); !ok || i != 0 {
		t.Errorf("ServiceByName(ssh) = %d, %v", i, ok)
	}
	a := set.Services[0].SPA
	for _, k := range a.Keys {
		if a.Key(k.ID) != k {
			t.Errorf("Key(%d) did not find its key", k.ID)
		}
	}
	if len(a.Keys) != 2 {
		t.Errorf("keys = %d, want 2", len(a.Keys))
	}
	if !set.HasSPA(set.Cover(22)) {
		t.Error("HasSPA(cover of 22) = false")
	}
	// The UDP SPA port is among the UDP ports the static rules divert.
	if !slices.Contains(set.UDPPorts(), 62201) {
		t.Errorf("UDPPorts() = %v, want the SPA port 62201 among them", set.UDPPorts())
	}
}
