package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRestartAfterCrash: after a SIGKILL the rules stay; a start with a bad
// config exits 2 and leaves the guard (the port stays closed); a good start
// takes over the rules in place, one copy of each, and works.
func TestRestartAfterCrash(t *testing.T) {
	e := newEnv(t, envOptions{svc: service{closed: reject}})
	before := knockwallLines(e.iptablesSave(t, "iptables"))
	e.d.kill(t)

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("services: {ssh: {ports: [2222], sequence: [2222]}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := e.pair.Server.Command(e.bin, "run", "-c", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("run with a bad config: %v\n%s", err, out)
	}
	if after := knockwallLines(e.iptablesSave(t, "iptables")); !slices.Equal(after, before) {
		t.Fatalf("a failed start changed the rules:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort)) // the guard, with no daemon

	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	if after := knockwallLines(e.iptablesSave(t, "iptables")); !slices.Equal(after, before) {
		t.Errorf("restart over the rules in place does not leave one copy of each:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	e.expectClosed(t, reject, e.pair.Client4, e.server4(protectedPort))
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
}

// TestKeepGuardOnStop: with firewall.keep_guard (set here from the
// environment), a clean stop removes diversion and reject but leaves the
// guard: the protected port stays closed until the next start, other ports
// work, and the next start takes the guard over.
func TestKeepGuardOnStop(t *testing.T) {
	t.Setenv("KNOCKWALL_FIREWALL_KEEP_GUARD", "true")
	e := newEnv(t, envOptions{svc: service{closed: reject}})
	if _, err := e.d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, l := range knockwallLines(e.iptablesSave(t, bin)) {
			if !strings.Contains(l, "KNOCKWALL-GUARD") {
				t.Errorf("%s: left after a clean stop with keep_guard: %s", bin, l)
			}
		}
		if !strings.Contains(strings.Join(knockwallLines(e.iptablesSave(t, bin)), "\n"), "-j DROP") {
			t.Errorf("%s: no guard left after a clean stop with keep_guard", bin)
		}
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort))
	e.expectClosed(t, drop, e.pair.Client6, e.server6(protectedPort))
	e.expectOpen(t, e.pair.Client4, e.server4(openPort)).Close()

	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
}
