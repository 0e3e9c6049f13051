package e2e

// The self-heal judges the kernel's rules by content: changes that keep
// every name and comment are noticed, logged with what differed, and undone.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHealContent: on an ordinary nftables table (owned_table false:
// another process can change it) a dormant table, the guard chain's policy
// set to drop, and the guard rule's body replaced under its own comment are
// each put back within healWithin, logged at ERROR with the difference,
// and the protected port is closed to a stranger again afterwards.
func TestHealContent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{backend: nftInline, secondClient: true, svc: service{closed: reject}})
	stranger := e.pair.Client2v4
	installed := e.knockwallRules(t)
	guardRule := regexp.MustCompile(`comment "(knockwall guard 0 [0-9a-f]+)" # handle (\d+)`)
	for _, tt := range []struct {
		name   string
		change func(t *testing.T) string // an nft command line
		want   string                    // in the logged differences
	}{
		{"dormant table", func(*testing.T) string { return "add table inet knockwall { flags dormant; }" }, "flags dormant"},
		{"guard policy drop", func(*testing.T) string {
			return "add chain inet knockwall guard { type filter hook input priority 50; policy drop; }"
		}, "chain guard has policy drop, want accept"},
		{"guard rule body", func(t *testing.T) string {
			out, err := e.run(e.pair.Server, "nft", "-a", "list", "chain", "inet", "knockwall", "guard")
			m := guardRule.FindStringSubmatch(string(out))
			if err != nil || m == nil {
				t.Fatalf("nft -a list chain: %v\n%s", err, out)
			}
			return fmt.Sprintf("replace rule inet knockwall guard handle %s meta l4proto tcp counter comment %q", m[2], m[1])
		}, "its expressions were changed, its comment kept"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mark := e.d.mark()
			cmd := tt.change(t)
			if out, err := e.run(e.pair.Server, "nft", cmd); err != nil {
				t.Fatalf("nft %s: %v %s", cmd, err, out)
			}
			l, err := e.d.waitLogFrom(mark, "firewall rules were changed by someone else; putting them back", nil, healWithin)
			if err != nil {
				t.Fatal(err)
			}
			if diff := l.str("differences"); !strings.Contains(diff, tt.want) {
				t.Errorf("logged differences %s, want one with %q", diff, tt.want)
			}
			if _, err := e.d.waitLogFrom(mark, "firewall rules restored", nil, healWithin); err != nil {
				t.Fatal(err)
			}
			if now := e.knockwallRules(t); strings.Join(now, "\n") != strings.Join(installed, "\n") {
				t.Errorf("after the heal:\n%s\nwant:\n%s", strings.Join(now, "\n"), strings.Join(installed, "\n"))
			}
			e.expectClosed(t, reject, stranger, e.server4(protectedPort))
		})
	}
	e.knock(t, e.pair.Server4, defaultSequence...)
	e.expectOpen(t, e.pair.Client4, e.server4(protectedPort)).Close()
}

// TestJumpFirst: on the iptables backend, a rule of the host's inserted
// ahead of knockwall's jump into the guard (`iptables -t security -I INPUT
// 1 ... -j ACCEPT`, which would let SYNs past the guard whenever the
// daemon is not deciding) is noticed: the jump is first again within
// healWithin, the host's rule stays after it, and with the daemon killed
// the protected port is closed by the guard.
func TestJumpFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{backend: iptBack, secondClient: true, svc: service{closed: reject}})
	mark := e.d.mark()
	ahead := []string{"-t", "security", "-I", "INPUT", "1", "-p", "tcp", "--dport", fmt.Sprint(protectedPort), "-j", "ACCEPT"}
	if out, err := e.run(e.pair.Server, "iptables", ahead...); err != nil {
		t.Fatalf("iptables %v: %v %s", ahead, err, out)
	}
	inserted := time.Now()
	first := func() string {
		for _, l := range ruleLines(e.iptablesSave(t, "iptables")) {
			if strings.HasPrefix(l, "*security -A INPUT ") {
				return l
			}
		}
		return ""
	}
	for time.Since(inserted) < healWithin && !strings.Contains(first(), "knockwall guard jump") {
		time.Sleep(50 * time.Millisecond)
	}
	if l := first(); !strings.Contains(l, "knockwall guard jump") {
		t.Fatalf("security INPUT starts with %q %v after the insert; want knockwall's jump", l, healWithin)
	}
	t.Logf("the jump was first again after %v", time.Since(inserted).Round(time.Millisecond))
	l, err := e.d.waitLogFrom(mark, "firewall rules were changed by someone else; putting them back", nil, logTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if d := l.str("differences"); !strings.Contains(d, "a rule is ahead of knockwall's jump") {
		t.Errorf("logged differences %s; want the rule ahead named", d)
	}
	if !strings.Contains(strings.Join(ruleLines(e.iptablesSave(t, "iptables")), "\n"), fmt.Sprintf("--dport %d -j ACCEPT", protectedPort)) {
		t.Error("the host's rule was removed; want it kept after knockwall's jump")
	}
	e.expectClosed(t, reject, e.pair.Client2v4, e.server4(protectedPort))
	e.d.kill(t)
	e.expectClosed(t, drop, e.pair.Client2v4, e.server4(protectedPort))
}

// TestReconcileStrayGrant: on an ordinary nftables table, a grant element
// that another process adds for a stranger (which lets the stranger's SYNs
// past in the kernel) is removed by the reconcile with the tracker: the
// daemon warns, and the stranger is refused again within a few seconds.
// (An owned table refuses the add: TestKernelOwned.)
func TestReconcileStrayGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{backend: nftFastHeal, secondClient: true, svc: service{closed: reject}})
	stranger := e.pair.Client2v4
	mark := e.d.mark()
	elem := fmt.Sprintf("add element inet knockwall grants4 { %s . %d timeout 1h }", stranger, protectedPort)
	if out, err := e.run(e.pair.Server, "nft", elem); err != nil {
		t.Fatalf("nft %s: %v %s", elem, err, out)
	}
	added := time.Now()
	const within = 3 * 2 * time.Second // a few reconcile periods
	if _, err := e.d.waitLogFrom(mark, "fast path: the grant sets held elements the tracker does not grant; removing them", nil, within); err != nil {
		t.Fatal(err)
	}
	t.Logf("the stray element was removed after %v", time.Since(added).Round(time.Millisecond))
	if out, _ := e.run(e.pair.Server, "nft", "list", "set", "inet", "knockwall", "grants4"); strings.Contains(string(out), stranger.String()) {
		t.Errorf("the grant set still holds the stranger:\n%s", out)
	}
	e.expectClosed(t, reject, stranger, e.server4(protectedPort))
}
