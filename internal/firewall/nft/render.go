package nft

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/rules"
)

// Render implements firewall.Backend: an `nft -f` script that installs p as
// Apply does, in one transaction (nft -f applies a file atomically): the
// table and sets added where missing, constant sets and knockwall's chains
// emptied and refilled, so running it again changes nothing and a guard in
// place is never absent. Queues are written as the native queue statement;
// a kernel without it (CONFIG_NFT_QUEUE) cannot load them from a script,
// though `knockwall run` installs the same rules through nft_compat.
func (b *Backend) Render(w io.Writer, p *firewall.Plan) error {
	t := "inet " + Table.Name
	fmt.Fprintln(w, "#!/usr/sbin/nft -f")
	fmt.Fprintln(w, "# knockwall's static rules, as `knockwall run` installs them. The guard chain keeps")
	fmt.Fprintln(w, "# protected ports closed whenever knockwall is not deciding. Rerunning this file")
	fmt.Fprintln(w, "# replaces knockwall's rules atomically; `knockwall rules remove` removes the table.")
	fmt.Fprintln(w, "# `knockwall run` makes the table owned and persistent where the kernel can (Linux 6.9+),")
	fmt.Fprintln(w, "# so that no other process can change it; nft cannot write those flags, so the table")
	fmt.Fprintln(w, "# this script makes is an ordinary one, which any process (and `nft flush ruleset`) can change.")
	fmt.Fprintf(w, "add table %s\n", t)
	for i := range p.Sets {
		s := &p.Sets[i]
		decl, err := setDecl(s)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "add set %s %s { %s }\n", t, s.Name, decl)
		if s.Dynamic {
			continue
		}
		fmt.Fprintf(w, "flush set %s %s\n", t, s.Name)
		if elems := setElems(s); elems != "" {
			fmt.Fprintf(w, "add element %s %s { %s }\n", t, s.Name, elems)
		}
	}
	for _, rc := range layout(p) {
		if c := rc.base; c != nil {
			fmt.Fprintf(w, "add chain %s %s { type filter hook %s priority %d; policy accept; }\n", t, c.Name, c.Hook, c.Priority)
		} else {
			fmt.Fprintf(w, "add chain %s %s\n", t, rc.name)
		}
		fmt.Fprintf(w, "flush chain %s %s\n", t, rc.name)
		for _, tr := range rc.rules {
			text, err := ruleText(p, tr)
			if err != nil {
				return fmt.Errorf("chain %s: %w", rc.name, err)
			}
			fmt.Fprintf(w, "add rule %s %s %s comment %q\n", t, rc.name, text, tr.tag)
		}
	}
	return nil
}

// setDecl declares s as newSet makes it (setHeader).
func setDecl(s *firewall.Set) (string, error) {
	ns, err := setHeader(s)
	if err != nil {
		return "", err
	}
	parts := []string{"type " + ns.KeyType.Name + ";"}
	var flags []string
	if ns.Interval {
		flags = append(flags, "interval")
	}
	if ns.Dynamic {
		flags = append(flags, "dynamic")
	}
	if ns.HasTimeout {
		flags = append(flags, "timeout")
	}
	if len(flags) > 0 {
		parts = append(parts, "flags "+strings.Join(flags, ",")+";")
	}
	if ns.Size > 0 {
		parts = append(parts, fmt.Sprintf("size %d;", ns.Size))
	}
	return strings.Join(parts, " "), nil
}

func setElems(s *firewall.Set) string {
	var out []string
	for _, r := range s.Ports {
		out = append(out, r.String())
	}
	for _, hp := range s.HostPorts {
		out = append(out, fmt.Sprintf("%s . %d", hp.Prefix.Masked(), hp.Port))
	}
	for _, p := range s.Prefixes {
		out = append(out, p.Masked().String())
	}
	for _, n := range s.Ifnames {
		out = append(out, fmt.Sprintf("%q", n))
	}
	return strings.Join(out, ", ")
}

// ruleText is one rule in nft's language, its parts in the order exprs
// emits them.
func ruleText(p *firewall.Plan, tr taggedRule) (string, error) {
	switch tr.entry {
	case entryLo:
		return `iifname "lo" accept`, nil
	case entryTrusted:
		return "iifname @" + firewall.SetTrusted + " accept", nil
	case entryScope4:
		return "meta nfproto ipv4 fib daddr type != local ip daddr != @" + firewall.SetRouted4 + " accept", nil
	case entryScope6:
		return "meta nfproto ipv6 fib daddr type != local ip6 daddr != @" + firewall.SetRouted6 + " accept", nil
	case entryDispatch:
		els := make([]string, len(tr.jumps))
		for i, j := range tr.jumps {
			els[i] = fmt.Sprintf("%s : jump %s", firewall.PortRange{Lo: j.lo, Hi: j.hi}, j.chain)
		}
		if tr.th {
			return "th dport vmap { " + strings.Join(els, ", ") + " }", nil
		}
		return "meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn tcp dport vmap { " + strings.Join(els, ", ") + " }", nil
	case entrySYN:
		return "meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn goto " + synChain, nil
	}
	r := tr.r
	var s []string
	ip := "ip"
	if r.Family == firewall.FamilyIPv6 {
		ip = "ip6"
	}
	switch r.Family {
	case firewall.FamilyIPv4:
		s = append(s, "meta nfproto ipv4")
	case firewall.FamilyIPv6:
		s = append(s, "meta nfproto ipv6")
	}
	l4 := ""
	switch r.Proto {
	case rules.ProtoTCP:
		l4 = "tcp"
	case rules.ProtoUDP:
		l4 = "udp"
	}
	// tp names the TCP header where the chain already says the packet is
	// TCP: without the protocol match nft would add.
	tp, dp := "tcp", l4
	if tr.th {
		tp, dp = "th", "th"
	}
	if l4 != "" {
		s = append(s, "meta l4proto "+l4)
	}
	if r.SYN {
		s = append(s, "tcp flags & (fin|syn|rst|ack) == syn")
	}
	if r.CtNew {
		s = append(s, "ct state new")
	}
	if r.DstLocal {
		s = append(s, "fib daddr type local")
	}
	if r.DPortSet != "" {
		s = append(s, fmt.Sprintf("%s dport @%s", dp, r.DPortSet))
	}
	if r.DstPortSet != "" {
		dip := "ip"
		if ps := p.Set(r.DstPortSet); ps != nil && ps.Kind == firewall.KindPrefixPort6 {
			dip = "ip6"
		}
		s = append(s, fmt.Sprintf("%s daddr . %s dport @%s", dip, tp, r.DstPortSet))
	}
	if r.CtDNAT {
		s = append(s, "ct status dnat ct original proto-dst @"+r.CtOrigDPortSet)
	}
	if r.NfprotoSet != "" {
		s = append(s, "meta nfproto @"+r.NfprotoSet)
	}
	if r.SrcSet != "" {
		s = append(s, fmt.Sprintf("%s saddr @%s", ip, r.SrcSet))
	}
	if r.SrcDPortSet != "" {
		s = append(s, fmt.Sprintf("%s saddr . %s dport @%s", ip, tp, r.SrcDPortSet))
	}
	if m := r.Mark; m != nil {
		op := "=="
		if m.Not {
			op = "!="
		}
		s = append(s, fmt.Sprintf("meta mark & 0x%08x %s 0x%08x", m.Mask, op, m.Value))
	}
	if r.ClearMark != 0 || r.OrMark != 0 {
		s = append(s, fmt.Sprintf("meta mark set meta mark & 0x%08x | 0x%08x", ^r.ClearMark, r.OrMark))
	}
	if r.AddSrc != "" {
		s = append(s, fmt.Sprintf("update @%s { %s saddr timeout %s }", r.AddSrc, ip, nftDuration(r.Timeout)))
	}
	if r.AddNfproto != "" {
		s = append(s, fmt.Sprintf("update @%s { meta nfproto timeout %s }", r.AddNfproto, nftDuration(r.Timeout)))
	}
	switch v := r.Verdict; v.Kind {
	case firewall.VerdictNone:
	case firewall.VerdictAccept:
		s = append(s, "accept")
	case firewall.VerdictDrop:
		s = append(s, "drop")
	case firewall.VerdictQueue:
		if v.QueueCount > 1 {
			s = append(s, fmt.Sprintf("queue num %d-%d bypass,fanout", v.QueueNum, v.QueueNum+v.QueueCount-1))
		} else {
			s = append(s, fmt.Sprintf("queue num %d bypass", v.QueueNum))
		}
	case firewall.VerdictRejectTCP:
		s = append(s, "reject with tcp reset")
	case firewall.VerdictRejectUnreach:
		s = append(s, "reject with icmpx port-unreachable")
	default:
		return "", fmt.Errorf("verdict %d: %w", v.Kind, firewall.ErrUnsupported)
	}
	return strings.Join(s, " "), nil
}

// nftDuration writes d as nft does: whole milliseconds.
func nftDuration(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}

// Renderer returns a backend that can only Render: it holds no netlink
// socket and writes the native queue statement.
func Renderer() *Backend { return &Backend{} }
