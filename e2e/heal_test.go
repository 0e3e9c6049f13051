package e2e

// The self-heal judges the kernel's rules by content: changes that keep
// every name and comment are noticed, logged with what differed, and undone.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
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
