package rules_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/rules"
)

// TestCompileOperate: control.socket, metrics.listen (with the token file
// it needs) and state.file are checked and carried into the Set; empty turns each off.
func TestCompileOperate(t *testing.T) {
	long := "/" + strings.Repeat("s", rules.MaxSocketPath)
	const tok = "/etc/knockwall/metrics.token"
	tests := []struct {
		name    string
		mod     func(c *rules.Config)
		wantKey string // "" = valid
	}{
		{"defaults", func(c *rules.Config) {}, ""},
		{"all off", func(c *rules.Config) { c.Control.Socket, c.Metrics.Listen, c.State.File = "", "", "" }, ""},
		{"metrics on loopback", func(c *rules.Config) { c.Metrics.Listen, c.Metrics.TokenFile = "127.0.0.1:9477", tok }, ""},
		{"metrics on IPv6 loopback", func(c *rules.Config) { c.Metrics.Listen, c.Metrics.TokenFile = "[::1]:9477", tok }, ""},
		{"metrics on localhost", func(c *rules.Config) { c.Metrics.Listen, c.Metrics.TokenFile = "localhost:9477", tok }, ""},
		{"metrics on every address", func(c *rules.Config) { c.Metrics.Listen, c.Metrics.TokenFile = ":9477", tok }, ""},
		{"metrics on loopback without a token", func(c *rules.Config) { c.Metrics.Listen = "127.0.0.1:9477" }, "metrics.token_file"},
		{"metrics token file relative", func(c *rules.Config) { c.Metrics.Listen, c.Metrics.TokenFile = "127.0.0.1:9477", "metrics.token" }, "metrics.token_file"},
		{"metrics off, token file left", func(c *rules.Config) { c.Metrics.TokenFile = tok }, ""},
		{"metrics without a port", func(c *rules.Config) { c.Metrics.Listen = "127.0.0.1" }, "metrics.listen"},
		{"metrics port 0", func(c *rules.Config) { c.Metrics.Listen = "127.0.0.1:0" }, "metrics.listen"},
		{"metrics port named", func(c *rules.Config) { c.Metrics.Listen = "127.0.0.1:http" }, "metrics.listen"},
		{"metrics host name", func(c *rules.Config) { c.Metrics.Listen = "example.org:9477" }, "metrics.listen"},
		{"relative socket", func(c *rules.Config) { c.Control.Socket = "control.sock" }, "control.socket"},
		{"unclean socket", func(c *rules.Config) { c.Control.Socket = "/run/knockwall/../x.sock" }, "control.socket"},
		{"socket path too long", func(c *rules.Config) { c.Control.Socket = long }, "control.socket"},
		{"relative state file", func(c *rules.Config) { c.State.File = "state.json" }, "state.file"},
		{"state file is a directory path", func(c *rules.Config) { c.State.File = "/var/lib/knockwall/" }, "state.file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			set, err := rules.Compile(c)
			if tt.wantKey == "" {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				if set.Control != c.Control || set.Metrics != c.Metrics || set.State != c.State {
					t.Fatalf("Set has %+v %+v %+v, want %+v %+v %+v", set.Control, set.Metrics, set.State, c.Control, c.Metrics, c.State)
				}
				return
			}
			var ke *rules.KeyError
			if !errors.As(err, &ke) || ke.Key != tt.wantKey || !errors.Is(err, rules.ErrInvalid) {
				t.Fatalf("Compile: %v; want a KeyError for %s wrapping ErrInvalid", err, tt.wantKey)
			}
		})
	}
}

// TestOperateDefaults: the control socket and the state file are on by
// default, metrics off.
func TestOperateDefaults(t *testing.T) {
	d := rules.Defaults()
	if d.Control.Socket != rules.DefaultControlSocket || d.State.File != rules.DefaultStateFile || d.Metrics.Listen != "" {
		t.Fatalf("defaults: %+v %+v %+v", d.Control, d.State, d.Metrics)
	}
}
