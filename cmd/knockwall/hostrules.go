//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"

	"github.com/google/nftables"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/internal/firewall/hostrules"
	"github.com/knockwall/knockwall/rules"
)

// hostRuleWarnings reads this host's own firewall rules (read-only:
// nftables over netlink, iptables-save) and names each accept rule that
// would open a protected port without knockwall's accept mark, which is
// what decides whenever knockwall's rules are absent. Rules it cannot read
// (not root) are not judged.
func hostRuleWarnings(ctx context.Context, set *rules.Set) []string {
	ports := slices.Concat(set.ProtectedPorts(), set.ForwardPorts())
	if len(ports) == 0 {
		return nil
	}
	slices.Sort(ports)
	m := firewall.Marks{Accept: uint32(set.Firewall.AcceptMark), Reject: uint32(set.Firewall.RejectMark), Mask: uint32(set.Firewall.MarkMask)}
	w := hostrules.Want{Ports: slices.Compact(ports), Trusted: set.Firewall.TrustedInterfaces, Marks: m}
	var found []hostrules.Finding
	var notes []string
	f, unread, err := readNftables(w)
	viaNetlink := err == nil
	found = append(found, f...)
	for _, u := range unread {
		notes = append(notes, "could not judge the host's rules in "+u)
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		// iptables-nft keeps its rules in nftables tables, judged above;
		// the legacy tables are read where both kinds are installed.
		save := bin + "-legacy-save"
		if _, err := exec.LookPath(save); err != nil {
			save = bin + "-save"
		}
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, save).Output()
		if err != nil || viaNetlink && bytes.Contains(out, []byte("(nf_tables)")) {
			continue
		}
		found = append(found, hostrules.Iptables(bin, out, w)...)
	}
	var out []string
	for _, f := range found {
		out = append(out, f.String()+": whenever knockwall's rules are absent (before it starts, after `knockwall rules remove`) that port is open; "+
			hostrules.Recipe(m))
	}
	return append(out, notes...)
}

// readNftables judges the host's nftables rules. The rules are decoded by
// google/nftables; a rule it cannot decode must not stop config check, so
// a panic there is an error like any other.
func readNftables(w hostrules.Want) (found []hostrules.Finding, unread []string, err error) {
	defer func() {
		if r := recover(); r != nil {
			found, unread, err = nil, []string{fmt.Sprintf("nftables: decoding failed: %v", r)}, fmt.Errorf("nftables: decoding failed: %v", r)
		}
	}()
	c, err := nftables.New()
	if err != nil {
		return nil, nil, err
	}
	return hostrules.Nftables(c, w)
}
