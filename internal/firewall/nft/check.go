package nft

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Check implements firewall.Backend: the table, every chain with its hook,
// priority and rules (by tag), and every set, with the elements of the
// constant ones.
func (b *Backend) Check(_ context.Context, p *firewall.Plan) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.read()
	if err != nil {
		return nil, err
	}
	if !st.exists {
		return []string{"table inet " + Table.Name + " missing"}, nil
	}
	var out []string
	if want := b.wantFlags(); st.flags != want {
		out = append(out, fmt.Sprintf("table inet %s has flags %s, want %s", Table.Name, flagNames(st.flags), flagNames(want)))
	}
	for i := range p.Sets {
		ps := &p.Sets[i]
		ks, ok := st.sets[ps.Name]
		if !ok {
			out = append(out, "set "+ps.Name+" missing")
			continue
		}
		ws, elems, err := newSet(ps)
		if err != nil {
			return nil, err
		}
		if !sameSet(ks, ws) {
			out = append(out, fmt.Sprintf("set %s is %s, want %s", ps.Name, setText(ks), setText(ws)))
			continue
		}
		if ps.Dynamic {
			continue
		}
		got, err := b.conn.GetSetElements(ks)
		if err != nil {
			return nil, fmt.Errorf("nftables: set %s elements: %w", ps.Name, err)
		}
		if !sameElements(got, elems) {
			out = append(out, fmt.Sprintf("set %s holds %d elements, not the %d knockwall put there", ps.Name, len(got), len(elems)))
		}
	}
	chains := layout(p)
	mine := map[string]bool{}
	for _, rc := range chains {
		mine[rc.name] = true
		kc, ok := st.chains[rc.name]
		if !ok {
			out = append(out, "chain "+rc.name+" missing")
			continue
		}
		if rc.base != nil {
			out = append(out, chainDiff(kc, rc.base)...)
		} else if kc.Hooknum != nil {
			out = append(out, "chain "+rc.name+" is a base chain, want a regular one")
		}
		got, err := b.listRules(kc.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, b.ruleDiff(&rc, got)...)
	}
	for name := range st.chains {
		if !mine[name] {
			out = append(out, "chain "+name+" is not knockwall's")
		}
	}
	return out, nil
}

// sameElements compares elements by key (and interval end), ignoring order.
func sameElements(got, want []nftables.SetElement) bool {
	if len(got) != len(want) {
		return false
	}
	key := func(e nftables.SetElement) string {
		return fmt.Sprintf("%x/%x/%v", e.Key, e.KeyEnd, e.IntervalEnd)
	}
	g := make([]string, len(got))
	for i, e := range got {
		g[i] = key(e)
	}
	w := make([]string, len(want))
	for i, e := range want {
		w[i] = key(e)
	}
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// Check compares content, not only names: the table's flags (a dormant
// table guards nothing), each chain's type, hook, priority and policy,
// each set's type and flags (and a constant set's elements), and each
// rule's comment tag and expressions. A rule's expressions are compared
// with what the kernel listed right after the last Apply: the kernel
// lists expressions in its own encoding (attributes it adds, ones it
// drops), so what was sent is not what it prints back, but what it
// printed once it prints again until someone changes the rule. With an
// owned table nobody else can change it between the Apply and that
// listing; with an ordinary one a change in that instant would be taken
// for knockwall's own until the next Apply.

// kernelRule is one rule as the kernel lists it: its comment tag and its
// expressions, in the kernel's encoding.
type kernelRule struct {
	tag   string
	exprs []byte
}

// listRules lists chain's rules, in order. It asks the kernel itself:
// google/nftables decodes whole rules and fails on some it can write (a ct
// expression with a direction).
func (b *Backend) listRules(chain string) ([]kernelRule, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: append([]byte(Table.Name), 0)},
		{Type: unix.NFTA_RULE_CHAIN, Data: append([]byte(chain), 0)},
	})
	if err != nil {
		return nil, err
	}
	msgs, err := b.nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, fmt.Errorf("nftables: rules of %s: %w", chain, err)
	}
	var out []kernelRule
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, err
		}
		var r kernelRule
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_USERDATA:
				r.tag, _ = userdata.GetString(ad.Bytes(), userdata.TypeComment)
			case unix.NFTA_RULE_EXPRESSIONS:
				r.exprs = slices.Clone(ad.Bytes())
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// snapshot keeps the rules of p's chains as the kernel lists them now,
// right after Apply.
func (b *Backend) snapshot(p *firewall.Plan) error {
	chains := layout(p)
	installed := make(map[string][]kernelRule, len(chains))
	for _, rc := range chains {
		name := rc.name
		rs, err := b.listRules(name)
		if err != nil {
			return err
		}
		installed[name] = rs
	}
	b.installed = installed
	return nil
}

// ruleDiff says how the rules of a chain in the kernel differ from pc's:
// other tags (a rule missing, added or moved), or the same tags with other
// expressions (a rule's body changed, its comment kept).
func (b *Backend) ruleDiff(pc *rchain, got []kernelRule) []string {
	want := pc.rules
	var out []string
	if len(got) != len(want) {
		out = append(out, fmt.Sprintf("chain %s holds %d rules, not the %d knockwall installs", pc.name, len(got), len(want)))
	}
	installed := b.installed[pc.name]
	for i := range min(len(got), len(want)) {
		if got[i].tag != want[i].tag {
			out = append(out, fmt.Sprintf("chain %s rule %d is %q, want %q", pc.name, i, got[i].tag, want[i].tag))
			continue
		}
		if i < len(installed) && installed[i].tag == got[i].tag && !bytes.Equal(installed[i].exprs, got[i].exprs) {
			out = append(out, fmt.Sprintf("chain %s rule %d (%q): its expressions were changed, its comment kept", pc.name, i, got[i].tag))
		}
	}
	return out
}

// chainDiff says how a chain in the kernel differs from pc: its type,
// hook, priority or policy.
func chainDiff(k *nftables.Chain, pc *firewall.Chain) []string {
	var out []string
	w := baseChain(pc)
	if k.Type != w.Type {
		out = append(out, fmt.Sprintf("chain %s has type %q, want %q", pc.Name, k.Type, w.Type))
	}
	switch {
	case k.Hooknum == nil || k.Priority == nil:
		out = append(out, fmt.Sprintf("chain %s is not a base chain", pc.Name))
	case *k.Hooknum != *w.Hooknum || *k.Priority != *w.Priority:
		out = append(out, fmt.Sprintf("chain %s is on hook %d priority %d, want hook %d priority %d", pc.Name, *k.Hooknum, *k.Priority, *w.Hooknum, *w.Priority))
	}
	if k.Policy == nil || *k.Policy != *w.Policy {
		out = append(out, fmt.Sprintf("chain %s has policy %s, want %s", pc.Name, policyName(k.Policy), policyName(w.Policy)))
	}
	return out
}

func policyName(p *nftables.ChainPolicy) string {
	switch {
	case p == nil:
		return "none"
	case *p == nftables.ChainPolicyAccept:
		return "accept"
	case *p == nftables.ChainPolicyDrop:
		return "drop"
	}
	return fmt.Sprint(*p)
}

// flagNames writes table flags as nft does.
func flagNames(f uint32) string {
	var names []string
	for _, n := range []struct {
		bit  uint32
		name string
	}{{tableDormant, "dormant"}, {tableOwner, "owner"}, {tablePersist, "persist"}} {
		if f&n.bit != 0 {
			names = append(names, n.name)
			f &^= n.bit
		}
	}
	if f != 0 {
		names = append(names, fmt.Sprintf("%#x", f))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// setText describes a set's type and flags, as sameSet compares them.
func setText(s *nftables.Set) string {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{s.Interval, "interval"}, {s.HasTimeout, "timeout"}, {s.Dynamic, "dynamic"}, {s.Concatenation, "concatenation"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	return fmt.Sprintf("type %#x (%d bytes) flags [%s]", s.KeyType.GetNFTMagic(), s.KeyType.Bytes, strings.Join(flags, ","))
}
