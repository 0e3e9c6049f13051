package nft

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

// handleOf finds the handle of the rule of chain whose comment is tag.
func (k *kernel) handleOf(t *testing.T, chain, tag string) string {
	t.Helper()
	re := regexp.MustCompile(`comment "` + regexp.QuoteMeta(tag) + `" # handle (\d+)`)
	m := re.FindStringSubmatch(k.nft(t, "-a", "list", "chain", "inet", "knockwall", chain))
	if m == nil {
		t.Fatalf("no rule %q in chain %s", tag, chain)
	}
	return m[1]
}

// TestKernelCheckContent: changes that keep every name and comment are
// found by Check, said in words, and undone by Apply: a dormant table, a
// chain's policy, a rule's body under its own comment, a set's flags.
func TestKernelCheckContent(t *testing.T) {
	ctx := context.Background()
	p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{FastPath: true})
	guard := p.Chain(firewall.ChainGuard)
	guardTag := firewall.Tag(guard.Name, 0, &guard.Rules[0])
	for _, tt := range []struct {
		name   string
		change func(k *kernel) []string // nft command lines
		want   string                   // in one of Check's lines
	}{
		{"dormant table", func(*kernel) []string {
			return []string{"add table inet knockwall { flags dormant; }"}
		}, "table inet knockwall has flags dormant, want none"},
		{"chain policy", func(*kernel) []string {
			return []string{fmt.Sprintf("add chain inet knockwall %s { type filter hook %s priority %d; policy drop; }", guard.Name, guard.Hook, guard.Priority)}
		}, "chain guard has policy drop, want accept"},
		{"rule body under its comment", func(k *kernel) []string {
			h := k.handleOf(t, guard.Name, guardTag)
			return []string{fmt.Sprintf("replace rule inet knockwall %s handle %s meta l4proto tcp accept comment %q", guard.Name, h, guardTag)}
		}, fmt.Sprintf("(%q): its expressions were changed, its comment kept", guardTag)},
		{"set flags", func(*kernel) []string {
			return []string{
				"flush chain inet knockwall divert",
				"delete set inet knockwall knock_udp",
				"add set inet knockwall knock_udp { type inet_service; flags interval; }",
			}
		}, "set knock_udp is type"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := newKernel(t, WithOwnedTable(false))
			if err := k.b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, k.b, p, "after Apply")
			// Lines sorted: a set made afresh is listed last.
			lines := func() string {
				l := strings.Split(k.listing(t), "\n")
				slices.Sort(l)
				return strings.Join(l, "\n")
			}
			want := lines()
			for _, cmd := range tt.change(k) {
				k.nft(t, cmd)
			}
			found, err := k.b.Check(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("Check: %q", found)
			if !slices.ContainsFunc(found, func(l string) bool { return strings.Contains(l, tt.want) }) {
				t.Errorf("Check = %q, want a line with %q", found, tt.want)
			}
			if err := k.b.Apply(ctx, p); err != nil {
				t.Fatalf("Apply to repair: %v", err)
			}
			mustCheck(t, k.b, p, "after the repair")
			if got := lines(); got != want {
				t.Errorf("after the repair:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
