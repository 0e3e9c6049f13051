package e2e

// `knockwall rules guard`: the guard alone, installed at boot before the
// network and the daemon, as knockwall-guard.service and OpenWrt's init
// script run it.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// guardCmd runs `knockwall rules guard -c cfg` in the server namespace.
func (e *env) guardCmd(t *testing.T, cfg string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", string(e.pair.Server), e.bin, "rules", "guard", "-c", cfg)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestGuardCommand: in a fresh namespace with no daemon, `knockwall rules
// guard` closes the protected port (a real connect gets no answer, IPv4
// and IPv6, a knock opens nothing) while an unprotected port stays open,
// and puts nothing in NFQUEUE's way. A daemon started afterwards takes over
// without a window: a stranger connecting all through its start never gets
// in, and the knocking client does once it is ready. `rules guard` run
// again while the daemon runs changes nothing.
func TestGuardCommand(t *testing.T) { eachBackend(t, testGuardCommand) }

func testGuardCommand(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, noDaemon: true, secondClient: true})
	if out, err := e.guardCmd(t, e.cfgPath); err != nil {
		t.Fatalf("knockwall rules guard: %v\n%s", err, out)
	} else if !strings.Contains(out, "guard installed") {
		t.Errorf("knockwall rules guard said: %s", out)
	}
	guard := e.knockwallRules(t)
	for _, l := range guard {
		if strings.Contains(l, "queue") || strings.Contains(l, "NFQUEUE") {
			t.Errorf("the guard alone holds a queue rule: %s", l)
		}
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort))
	e.expectClosed(t, drop, e.pair.Client6, e.server6(protectedPort))
	e.expectOpen(t, e.pair.Client4, e.server4(openPort)).Close()
	e.expectOpen(t, e.pair.Client6, e.server6(openPort)).Close()
	e.knock(t, e.pair.Server4, defaultSequence...) // nobody to judge it
	e.expectStaysClosed(t, drop, e.pair.Client4, e.server4(protectedPort))

	// The daemon starts while a stranger keeps connecting.
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		attempts int
		got      []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(readyTimeout + 5*time.Second)
		for attempts < 400 && time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			attempts++
			c, err := e.dial(e.pair.Client2v4, e.server4(protectedPort), 200*time.Millisecond)
			if err == nil {
				got = append(got, c.LocalAddr().String())
				c.Close()
			}
		}
	}()
	e.d = startDaemon(t, e.pair.Server, e.bin, e.cfgPath)
	time.Sleep(settle) // a few more attempts against the daemon's rules
	close(stop)
	wg.Wait()
	if len(got) > 0 {
		t.Errorf("a stranger connected %d times (of %d attempts) while the daemon took over from the guard", len(got), attempts)
	}
	if attempts < 2 {
		t.Errorf("only %d connect attempts during the start", attempts)
	}
	t.Logf("%d connect attempts during the daemon's start, none through", attempts)
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort)) // the daemon answers now
	e.knockOpen(t).Close()

	running := e.knockwallRules(t)
	out, err := e.guardCmd(t, e.cfgPath)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Errorf("rules guard beside the daemon: %v\n%s", err, out)
	}
	if after := e.knockwallRules(t); !slices.Equal(after, running) {
		t.Errorf("rules guard beside the daemon changed its rules:\nbefore: %q\nafter:  %q", running, after)
	}
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
}

// TestGuardBadConfig: `knockwall rules guard` with a configuration it
// cannot read (missing, not YAML, firewall.interfaces) exits 2 with a
// message that says nothing changed, and the guard already in place stays:
// the protected port stays closed.
func TestGuardBadConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noDaemon: true})
	if out, err := e.guardCmd(t, e.cfgPath); err != nil {
		t.Fatalf("knockwall rules guard: %v\n%s", err, out)
	}
	installed := e.knockwallRules(t)
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("services: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "interfaces.yaml")
	if err := os.WriteFile(old, []byte("firewall: {interfaces: [eth0]}\nservices: {ssh: {ports: [2222], sequence: [1000, 2000, 3000]}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []string{filepath.Join(dir, "missing.yaml"), broken, old} {
		out, err := e.guardCmd(t, cfg)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s: %v, want exit status 2\n%s", filepath.Base(cfg), err, out)
		}
		if !strings.Contains(out, "no rule changed: a guard already in place stays") {
			t.Errorf("%s: the message does not say nothing changed:\n%s", filepath.Base(cfg), out)
		}
		if got := e.knockwallRules(t); !slices.Equal(got, installed) {
			t.Errorf("%s: the rules changed:\nbefore: %q\nafter:  %q", filepath.Base(cfg), installed, got)
		}
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort))
	e.expectOpen(t, netip.Addr{}, e.server4(openPort)).Close()
}

// TestGuardHostAcceptRules: `knockwall config check` names the host's own
// accept rules that would open the protected port whenever knockwall's
// rules are absent (nftables, iptables-nft through netlink, iptables-legacy
// through iptables-legacy-save), and not those that ask for knockwall's
// accept mark or open an unprotected port.
func TestGuardHostAcceptRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noDaemon: true})
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Fatalf("iptables-legacy: %v (Debian's iptables package has it)", err)
	}
	for _, cmd := range [][]string{
		{"nft", `add table inet host
add chain inet host input { type filter hook input priority 0; policy drop; }
add rule inet host input ct state established,related accept
add rule inet host input tcp dport 2222 accept comment "host ssh"
add rule inet host input tcp dport 2222 meta mark & 0x30000000 == 0x10000000 accept comment "marked ssh"
add rule inet host input tcp dport 4080 accept comment "web"`},
		{"iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"},
		{"iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-m", "comment", "--comment", "legacy ssh", "-j", "ACCEPT"},
		{"iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-m", "mark", "--mark", "0x10000000/0x30000000", "-j", "ACCEPT"},
	} {
		if out, err := e.run(e.pair.Server, cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", string(e.pair.Server), e.bin, "config", "check", "-c", e.cfgPath)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("config check: %v\n%s", err, stderr.String())
	}
	var found []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "without knockwall's accept mark") {
			found = append(found, l)
		}
	}
	for _, want := range []string{
		"nftables table inet host chain input handle",
		"nftables table ip filter chain INPUT handle",
		"iptables -t filter INPUT accepts TCP to protected port(s) 2222",
	} {
		if !slices.ContainsFunc(found, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("no warning for %q in:\n%s", want, stderr.String())
		}
	}
	if len(found) != 3 {
		t.Errorf("%d warnings about host rules, want 3:\n%s", len(found), strings.Join(found, "\n"))
	}
	for _, l := range found {
		rule, recipe, _ := strings.Cut(l, ": whenever")
		if strings.Contains(rule, "marked ssh") || strings.Contains(rule, "(web)") || strings.Contains(rule, "-m mark") {
			t.Errorf("warned about a rule that fails closed or opens no protected port: %s", l)
		}
		if !strings.Contains(recipe, "meta mark & 0x30000000 == 0x10000000 accept") {
			t.Errorf("the warning does not say how to write the rule: %s", l)
		}
	}
}

// TestGuardHostRecipe: a host whose own rules (policy drop) accept the
// protected port only with knockwall's accept mark, as the docs say to
// write them, works while knockwall runs (a knock opens the port through
// the host's rule) and stays closed when knockwall's rules are gone (the
// daemon killed, `knockwall rules remove`), even for the source that
// knocked; the plain accept rule the docs warn against opens it.
func TestGuardHostRecipe(t *testing.T) { eachBackend(t, testGuardHostRecipe) }

func testGuardHostRecipe(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, secondClient: true, beforeStart: func(t *testing.T, e *env) {
		script := fmt.Sprintf(`add table inet host
add chain inet host input { type filter hook input priority 0; policy drop; }
add rule inet host input ct state established,related accept
add rule inet host input iif "lo" accept
add rule inet host input meta l4proto ipv6-icmp accept
add rule inet host input tcp dport %d accept
add rule inet host input tcp dport %d meta mark & 0x30000000 == 0x10000000 accept comment "the recipe"`, openPort, protectedPort)
		if out, err := e.run(e.pair.Server, "nft", script); err != nil {
			t.Fatalf("host rules: %v %s", err, out)
		}
	}})
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort))
	e.knockOpen(t).Close() // through the host's mark rule

	e.d.kill(t)
	e.rulesRemove(t)
	if got := e.knockwallRules(t); len(got) > 0 {
		t.Fatalf("knockwall's rules left: %q", got)
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort))
	e.expectClosed(t, drop, e.pair.Client2v4, e.server4(protectedPort))
	e.expectOpen(t, e.pair.Client4, e.server4(openPort)).Close()

	// What the recipe replaces: a plain accept opens the port to anyone
	// while knockwall is absent.
	if out, err := e.run(e.pair.Server, "nft", "add", "rule", "inet", "host", "input", "tcp", "dport", fmt.Sprint(protectedPort), "accept"); err != nil {
		t.Fatalf("plain accept: %v %s", err, out)
	}
	e.expectOpen(t, e.pair.Client2v4, e.server4(protectedPort)).Close()
}
