//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

// fakeBackend is a firewall.Backend that records what it is asked to
// apply, and answers Check with missing.
type fakeBackend struct {
	missing  []string
	applyErr error
	applied  []*firewall.Plan
}

func (*fakeBackend) Name() string                 { return "fake" }
func (*fakeBackend) Close() error                 { return nil }
func (*fakeBackend) Remove(context.Context) error { return nil }
func (*fakeBackend) Render(io.Writer, *firewall.Plan) error {
	return nil
}
func (f *fakeBackend) Check(context.Context, *firewall.Plan) ([]string, error) { return f.missing, nil }
func (f *fakeBackend) Apply(_ context.Context, p *firewall.Plan) error {
	if f.applyErr != nil {
		return f.applyErr
	}
	f.applied = append(f.applied, p)
	return nil
}

// TestInstallGuard: the guard alone goes in (no queue, no fast path, the
// guards and the mark clearing), unless the daemon's whole plan is in
// place already; a failed Apply is an error that says nothing changed.
func TestInstallGuard(t *testing.T) {
	for _, fast := range []bool{false, true} {
		set := fwtest.RouterSet(t)
		t.Run(map[bool]string{false: "inline", true: "fast path"}[fast], func(t *testing.T) {
			b := &fakeBackend{missing: []string{"table inet knockwall missing"}}
			var out bytes.Buffer
			if err := installGuard(context.Background(), b, set, fast, &out); err != nil {
				t.Fatal(err)
			}
			if len(b.applied) != 1 {
				t.Fatalf("applied %d plans, want 1", len(b.applied))
			}
			p := b.applied[0]
			guards := 0
			for _, c := range p.Chains {
				for _, r := range c.Rules {
					if r.Verdict.Kind == firewall.VerdictQueue || !r.Role.Kept() {
						t.Errorf("chain %s holds a %s rule (verdict %d): the guard alone must go in", c.Name, r.Role, r.Verdict.Kind)
					}
					if r.Role == firewall.RoleGuard {
						guards++
					}
				}
				if len(c.Trusted) == 0 {
					t.Errorf("chain %s does not skip the trusted interfaces", c.Name)
				}
			}
			// Protected ports, the port forward on input and on the
			// forward path, routed hosts of each family.
			if guards != 5 {
				t.Errorf("%d guard rules, want 5", guards)
			}
			if !strings.Contains(out.String(), "guard installed (fake)") || !strings.Contains(out.String(), "22222") {
				t.Errorf("output: %q", out.String())
			}
		})
	}

	t.Run("the daemon's rules in place", func(t *testing.T) {
		b := &fakeBackend{}
		var out bytes.Buffer
		if err := installGuard(context.Background(), b, fwtest.Set(t, nil), true, &out); err != nil {
			t.Fatal(err)
		}
		if len(b.applied) != 0 {
			t.Errorf("applied %d plans over the daemon's rules, want none", len(b.applied))
		}
		if !strings.Contains(out.String(), "nothing changed") {
			t.Errorf("output: %q", out.String())
		}
	})

	t.Run("apply fails", func(t *testing.T) {
		b := &fakeBackend{missing: []string{"x"}, applyErr: errors.New("netlink: operation not permitted")}
		err := installGuard(context.Background(), b, fwtest.Set(t, nil), false, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "whatever was in place stays") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestRulesGuardConfig: a configuration that cannot be read or does not
// validate changes nothing (it is refused before any backend is opened)
// and exits 2 saying so; firewall.manage: false installs nothing.
func TestRulesGuardConfig(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"missing file", []string{"-c", "/nonexistent/knockwall.yaml"}, 2, "does not exist"},
		{"not YAML", []string{"-c", writeConfig(t, "services: [\n")}, 2, "parse yaml"},
		{"invalid", []string{"-c", writeConfig(t, "services: {ssh: {ports: [22], sequence: [22]}}\n")}, 2, "services.ssh.sequence[0]"},
		{"firewall.interfaces", []string{"-c", writeConfig(t, "firewall: {interfaces: [wan]}\nservices: {ssh: {ports: [22], sequence: [1, 2, 3]}}\n")}, 2, "firewall.trusted_interfaces"},
		{"manage false", []string{"-c", writeConfig(t, "firewall: {manage: false}\nservices: {ssh: {ports: [22], sequence: [1, 2, 3]}}\n")}, 0, "firewall.manage is false: no guard installed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, nil, append([]string{"rules", "guard"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d (want %d), stderr %q (want ∋ %q)", code, tt.wantCode, errOut, tt.wantErr)
			}
			if tt.wantCode == 2 && !strings.Contains(errOut, "no rule changed: a guard already in place stays") {
				t.Errorf("stderr does not say nothing changed: %q", errOut)
			}
		})
	}
}

// TestTrustedInterfacesConfig: firewall.interfaces is refused with its
// replacement named, by config check and run alike; trusted_interfaces is
// shown, and a name that is not an interface name is refused.
func TestTrustedInterfacesConfig(t *testing.T) {
	const svc = "services: {ssh: {ports: [22], sequence: [1000, 2000, 3000]}}\n"
	tests := []struct {
		name     string
		args     []string
		cfg      string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"interfaces refused by check", []string{"config", "check"}, "firewall: {interfaces: [wan]}\n" + svc, 2, "",
			"firewall.interfaces: is replaced by firewall.trusted_interfaces"},
		{"interfaces refused by run", []string{"run"}, "firewall: {interfaces: [pppoe-wan]}\n" + svc, 2, "",
			"firewall.interfaces: is replaced by firewall.trusted_interfaces"},
		{"trusted shown", []string{"config", "check"}, "firewall: {trusted_interfaces: [lo, kw-nonexistent0]}\n" + svc, 0,
			"trusted_interfaces: [lo, kw-nonexistent0]", `names "kw-nonexistent0", which does not exist`},
		{"bad name", []string{"config", "check"}, "firewall: {trusted_interfaces: [\"br lan\"]}\n" + svc, 2, "",
			"firewall.trusted_interfaces[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, nil, append(tt.args, "-c", writeConfig(t, tt.cfg))...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout ∋ %q, stderr ∋ %q", code, tt.wantCode, out, errOut, tt.wantOut, tt.wantErr)
			}
		})
	}
}
