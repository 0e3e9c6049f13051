package rules_test

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/rules"
)

func fwknopReader(t *testing.T) rules.Option {
	t.Helper()
	return rules.WithFwknopKeyReader(func(path string) (*fwknop.Key, error) {
		if path != "fw.key" {
			return nil, errors.New("no such key")
		}
		b, err := os.ReadFile("../fwknop/testdata/fwknop.key")
		if err != nil {
			t.Fatal(err)
		}
		return fwknop.ParseKey(b)
	})
}

func TestCompileFwknop(t *testing.T) {
	base := func() rules.Config {
		c := rules.Defaults()
		ssh := rules.ServiceDefaults()
		ssh.Ports = []int{22}
		ssh.Fwknop.KeyFile = "fw.key"
		c.Services = map[string]rules.ServiceConfig{"ssh": ssh}
		return c
	}
	tests := []struct {
		name    string
		mutate  func(c *rules.Config)
		wantKey string
	}{
		{name: "defaults", mutate: func(*rules.Config) {}},
		{name: "missing key", mutate: func(c *rules.Config) { s := c.Services["ssh"]; s.Fwknop.KeyFile = "nope"; c.Services["ssh"] = s }, wantKey: "services.ssh.fwknop.key_file"},
		{name: "port 0", mutate: func(c *rules.Config) { s := c.Services["ssh"]; s.Fwknop.Port = 0; c.Services["ssh"] = s }, wantKey: "services.ssh.fwknop.port"},
		{name: "max_age 0", mutate: func(c *rules.Config) { s := c.Services["ssh"]; s.Fwknop.MaxAge = 0; c.Services["ssh"] = s }, wantKey: "services.ssh.fwknop.max_age"},
		{name: "max_age 2h", mutate: func(c *rules.Config) { s := c.Services["ssh"]; s.Fwknop.MaxAge = 2 * time.Hour; c.Services["ssh"] = s }, wantKey: "services.ssh.fwknop.max_age"},
		{name: "on a protected port", mutate: func(c *rules.Config) { s := c.Services["ssh"]; s.Fwknop.Port = 22; c.Services["ssh"] = s }, wantKey: "services.ssh.fwknop.port"},
		{name: "on a knock port", mutate: func(c *rules.Config) {
			s := c.Services["ssh"]
			s.Sequence = []string{"7000", "8000", "62201/udp"}
			c.Services["ssh"] = s
		}, wantKey: "services.ssh.fwknop.port"},
		{name: "shared by two services", mutate: func(c *rules.Config) {
			db := rules.ServiceDefaults()
			db.Ports = []int{5432}
			db.Fwknop.KeyFile = "fw.key"
			c.Services["db"] = db
		}, wantKey: "services.ssh.fwknop.port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mutate(&c)
			set, err := rules.Compile(c, fwknopReader(t))
			if tt.wantKey == "" {
				if err != nil {
					t.Fatal(err)
				}
				f := set.Services[0].Fwknop
				if f == nil || f.Port != rules.DefaultFwknopPort || f.MaxAge != rules.DefaultFwknopMaxAge {
					t.Fatalf("Fwknop = %+v, want the defaults", f)
				}
				if i, ok := set.FwknopService(rules.DefaultFwknopPort); !ok || i != 0 {
					t.Error("FwknopService does not find the port")
				}
				if !slices.Contains(set.UDPPorts(), rules.DefaultFwknopPort) || !slices.Contains(set.FwknopPorts(), rules.DefaultFwknopPort) {
					t.Errorf("UDPPorts %v lacks the fwknop port", set.UDPPorts())
				}
				return
			}
			var ke *rules.KeyError
			if !errors.As(err, &ke) || ke.Key != tt.wantKey || !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("err = %v, want a KeyError on %s", err, tt.wantKey)
			}
		})
	}
}
