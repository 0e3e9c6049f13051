package ipt

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/fwtest"
)

// TestKernelJumpFirst: a rule inserted ahead of knockwall's jump into the
// guard (security) or reject (filter) chain would decide before the guard
// does; Check says so, naming the rule, and Apply puts the jump first
// again in the same commit, leaving the host's rule in place after it.
func TestKernelJumpFirst(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			ns := kernelNS(t)
			run := nsExec(ns, variant)
			ctx := context.Background()
			b := New(run)
			p := firewall.NewPlan(fwtest.Set(t, nil), firewall.Options{})
			if err := b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			for _, table := range []string{"security", "filter"} {
				ahead := []string{"-w", "-t", table, "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}
				for _, bin := range []string{"iptables", "ip6tables"} {
					if _, err := Run(ctx, nil, "ip", append([]string{"netns", "exec", string(ns), bin + "-" + variant}, ahead...)...); err != nil {
						t.Fatal(err)
					}
				}
			}
			found, err := b.Check(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, l := range found {
				if strings.Contains(l, "a rule is ahead of knockwall's jump") && strings.Contains(l, "--dport 22 -j ACCEPT") {
					n++
				}
			}
			if n != 4 { // two tables, two families
				t.Errorf("Check = %q; want the rule ahead named for security and filter, IPv4 and IPv6", found)
			}
			if err := b.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			if found, err := b.Check(ctx, p); err != nil || len(found) > 0 {
				t.Fatalf("Check after the repair = %q, %v", found, err)
			}
			for _, fam := range families {
				cur, err := b.save(ctx, fam)
				if err != nil {
					t.Fatal(err)
				}
				for _, table := range []string{"security", "filter"} {
					lines := cur.builtins[table]["INPUT"]
					if len(lines) < 2 || !isJumpTag(commentOf(lines[0])) || !slices.ContainsFunc(lines[1:], func(l string) bool { return strings.Contains(l, "--dport 22 -j ACCEPT") }) {
						t.Errorf("%s -t %s INPUT after the repair:\n%s\nwant knockwall's jump first, the host's rule kept", fam.bin, table, strings.Join(lines, "\n"))
					}
				}
			}
		})
	}
}
