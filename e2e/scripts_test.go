package e2e

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// legacyRules are knockwall's rules as an earlier version installed them:
// the loopback exemption as a RETURN inside knockwall's chains and a guard
// jump taking all TCP. The guard's DROP rule was the same as today's.
var legacyRules = [][]string{
	{"-t", "security", "-N", "KNOCKWALL-GUARD"},
	{"-t", "security", "-A", "KNOCKWALL-GUARD", "-i", "lo", "-m", "comment", "--comment", "knockwall", "-j", "RETURN"},
	{"-t", "security", "-A", "KNOCKWALL-GUARD", "-p", "tcp", "--syn", "--dport", "2222", "-m", "mark", "!", "--mark", "0x10000000/0x30000000", "-m", "comment", "--comment", "knockwall", "-j", "DROP"},
	{"-t", "security", "-I", "INPUT", "1", "-p", "tcp", "-m", "comment", "--comment", "knockwall", "-j", "KNOCKWALL-GUARD"},
	{"-t", "mangle", "-N", "KNOCKWALL"},
	{"-t", "mangle", "-A", "KNOCKWALL", "-i", "lo", "-m", "comment", "--comment", "knockwall", "-j", "RETURN"},
	{"-t", "mangle", "-A", "KNOCKWALL", "-p", "tcp", "--syn", "-m", "comment", "--comment", "knockwall", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"},
	{"-t", "mangle", "-A", "INPUT", "-m", "comment", "--comment", "knockwall", "-j", "KNOCKWALL"},
}

// TestInstallScripts: scripts/install-rules.sh, for hosts that manage their
// own firewall, replaces an earlier version's rules, runs again without
// adding a second copy of anything, keeps the protected port closed with no
// daemon (the guard), and scripts/remove-rules.sh then leaves nothing.
func TestInstallScripts(t *testing.T) {
	e := newEnv(t, envOptions{svc: service{closed: reject}, noDaemon: true})
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, r := range legacyRules {
			if out, err := e.run(e.pair.Server, bin, append([]string{"-w"}, r...)...); err != nil {
				t.Fatalf("%s %v: %v %s", bin, r, err, out)
			}
		}
	}
	script := func(name string) {
		t.Helper()
		cmd := e.pair.Server.Command("bash", "../scripts/"+name, e.cfgPath)
		cmd.Env = append(os.Environ(), "KNOCKWALL_BIN="+e.bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	want, err := e.pair.Server.Command(e.bin, "rules", "print", "-c", e.cfgPath).Output()
	if err != nil {
		t.Fatalf("rules print: %v", err)
	}

	script("install-rules.sh")
	first := knockwallLines(e.iptablesSave(t, "iptables")) // sorted by iptables-save, per table
	for _, l := range first {
		if l == "-A KNOCKWALL-GUARD -i lo -m comment --comment knockwall -j RETURN" || l == "-A KNOCKWALL -i lo -m comment --comment knockwall -j RETURN" ||
			l == "-A INPUT -m comment --comment knockwall -j KNOCKWALL" || l == "-A INPUT -p tcp -m comment --comment knockwall -j KNOCKWALL-GUARD" {
			t.Errorf("an earlier version's rule survived the install: %s", l)
		}
	}
	for _, must := range []string{"! -i lo -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment knockwall -j KNOCKWALL-GUARD", "-j NFQUEUE", "-j REJECT", "-j DROP"} {
		if !strings.Contains(strings.Join(first, "\n"), must) {
			t.Errorf("after install-rules.sh no rule has %q:\n%s\n(the plan:\n%s)", must, strings.Join(first, "\n"), want)
		}
	}
	e.expectClosed(t, drop, e.pair.Client4, e.server4(protectedPort)) // the guard, no daemon
	e.expectOpen(t, e.pair.Client4, e.server4(openPort)).Close()      // bypass: other ports work

	script("install-rules.sh")
	if again := knockwallLines(e.iptablesSave(t, "iptables")); !slices.Equal(again, first) {
		t.Errorf("a second install-rules.sh changed the rules:\nfirst:\n%s\nsecond:\n%s", strings.Join(first, "\n"), strings.Join(again, "\n"))
	}

	script("remove-rules.sh")
	for _, bin := range []string{"iptables", "ip6tables"} {
		if left := knockwallLines(e.iptablesSave(t, bin)); len(left) > 0 {
			t.Errorf("%s after remove-rules.sh:\n%s", bin, strings.Join(left, "\n"))
		}
	}
}
