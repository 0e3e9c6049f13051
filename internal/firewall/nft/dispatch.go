package nft

import (
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
	"github.com/knockwall/knockwall/rules"
)

// Dispatch by destination port. On the fast path most of the divert
// chain's rules concern a few ports (knock ports, protected ports, port
// forwards), yet a SYN to any other port would walk through all of them.
// So the rules of a port set are moved to a regular chain of their own,
// and one rule in their place looks the SYN's destination port up in a
// verdict map that jumps to the chain of its set: a SYN to an unrelated
// port costs one lookup where it cost a rule per set. Rules of the sources
// with knock progress and of degraded families, which concern every port,
// stay in the base chain after it.
//
// The layout is used only where it decides exactly as the plain chain
// does; dispatch checks the conditions on the plan, and a plan that does
// not meet them is installed as it is.

// dispatchSets are the port sets whose rules move, in the order their
// rules appear in the plan's divert chain.
var dispatchSets = []string{firewall.SetKnockTCP, firewall.SetProtected, firewall.SetFwdPorts}

// dispatchMaxRanges bounds the verdict map's elements.
const dispatchMaxRanges = 1024

// rchain is a chain as installed: a plan chain's base chain, or a regular
// chain the divert chain's verdict map jumps to (base nil).
type rchain struct {
	name  string
	base  *firewall.Chain
	rules []taggedRule
}

// portJump is one element of the dispatch verdict map: a port or a range
// of ports (a rotating sequence's).
type portJump struct {
	lo, hi uint16
	chain  string
}

// dispatchChain is the regular chain of a port set's rules.
func dispatchChain(set string) string { return firewall.ChainDivert + "_" + set }

// layout lists the chains that install p, in the order they are made: a
// chain another one jumps to comes before it.
func layout(p *firewall.Plan) []rchain {
	var out []rchain
	for ci := range p.Chains {
		pc := &p.Chains[ci]
		if subs, base, ok := dispatch(p, pc); ok {
			out = append(out, subs...)
			out = append(out, rchain{name: pc.Name, base: pc, rules: base})
			continue
		}
		out = append(out, rchain{name: pc.Name, base: pc, rules: chainRules(pc)})
	}
	return out
}

// synChain is the regular chain of the divert chain's TCP SYN rules.
const synChain = firewall.ChainDivert + "_syn"

// dispatch lays out the fast path's divert chain pc: its rules about TCP
// SYNs in a chain of their own (synChain, reached by one goto, so other
// packets pass one rule instead of each SYN rule), and within it the rules
// of each port set in a regular chain reached through the verdict map.
// Rules in those chains leave out the protocol, SYN and port matches the
// way there already made. ok is false when pc is not such a chain or not
// one dispatch can install unchanged. A divert chain with a rule for other
// TCP packets, or for any protocol, gets the verdict map without the SYN
// chain.
func dispatch(p *firewall.Plan, pc *firewall.Chain) (subs []rchain, base []taggedRule, ok bool) {
	if !p.FastPath || pc.Name != firewall.ChainDivert {
		return nil, nil, false
	}
	ports, ok := dispatchPorts(p)
	if !ok {
		return nil, nil, false
	}
	all := chainRules(pc)
	var entries, syn, other []taggedRule
	synOnly := true
	for _, tr := range all {
		switch {
		case tr.r == nil:
			entries = append(entries, tr)
		case tr.r.Proto == rules.ProtoTCP && tr.r.SYN:
			syn = append(syn, tr)
		case tr.r.Proto == rules.ProtoUDP:
			other = append(other, tr)
		default:
			synOnly = false
		}
	}
	if !synOnly {
		return split(all, ports, false)
	}
	subs, kept, ok := split(syn, ports, true)
	if !ok {
		return nil, nil, false
	}
	subs = append(subs, rchain{name: synChain, rules: kept})
	base = append(append(entries, taggedRule{entry: entrySYN, tag: firewall.Owner + " " + pc.Name + " syn"}), other...)
	return subs, base, true
}

// split moves the rules of dispatchSets out of rules into a chain per set
// and puts the dispatch rule where the first of them was. With th, every
// rule is about TCP SYNs alone and reached only by them: their protocol
// and SYN matches are left out, and in a set's chain the port match too.
func split(rs []taggedRule, ports map[string][]firewall.PortRange, th bool) (subs []rchain, base []taggedRule, ok bool) {
	var grants []taggedRule
	bySet := map[string][]taggedRule{}
	first := -1
	var kept []taggedRule
	for _, tr := range rs {
		switch k := dispatchKind(tr.r); {
		case k == kindGrant:
			grants = append(grants, tr)
		case k == kindPort:
			bySet[tr.r.DPortSet] = append(bySet[tr.r.DPortSet], tr)
		default:
			if first >= 0 && !independent(tr.r) {
				return nil, nil, false
			}
			kept = append(kept, implied(tr, th, false))
			continue
		}
		if first < 0 {
			first = len(kept)
		}
	}
	if first < 0 {
		return nil, nil, false
	}
	// Grants answer SYNs to the ports grants are written for: protected
	// ports and port forwards. Each of those chains must end in a rule
	// every SYN to its ports matches (the queue), as the plain chain's
	// later rules would all have queued it too.
	var jumps []portJump
	for _, set := range dispatchSets {
		rs := bySet[set]
		if len(rs) == 0 {
			continue
		}
		if set != firewall.SetKnockTCP {
			last := rs[len(rs)-1].r
			if len(rs) != 1 || !terminalQueue(last) {
				return nil, nil, false
			}
			rs = append(append([]taggedRule(nil), grants...), rs...)
		}
		name := dispatchChain(set)
		moved := make([]taggedRule, len(rs))
		for i, tr := range rs {
			moved[i] = implied(tr, th, true)
		}
		subs = append(subs, rchain{name: name, rules: moved})
		for _, r := range ports[set] {
			jumps = append(jumps, portJump{lo: r.Lo, hi: r.Hi, chain: name})
		}
	}
	if len(grants) > 0 && len(bySet[firewall.SetProtected]) == 0 {
		return nil, nil, false
	}
	d := taggedRule{entry: entryDispatch, jumps: jumps, th: th, tag: firewall.Owner + " " + firewall.ChainDivert + " dispatch"}
	base = append(append(append([]taggedRule(nil), kept[:first]...), d), kept[first:]...)
	return subs, base, true
}

// implied is tr in a chain only TCP SYNs reach (th), and with port, only
// those to its port set: the matches that makes true are left out.
func implied(tr taggedRule, th, port bool) taggedRule {
	if !th || tr.r == nil {
		return tr
	}
	r := *tr.r
	r.Proto, r.SYN = 0, false
	if port {
		r.DPortSet = ""
	}
	tr.r, tr.th = &r, true
	return tr
}

const (
	kindOther = iota
	kindPort  // a TCP SYN rule on one of dispatchSets
	kindGrant // a TCP SYN rule on a grant set
)

func dispatchKind(r *firewall.Rule) int {
	if r == nil || r.Proto != rules.ProtoTCP || !r.SYN || r.SrcSet != "" || r.DstPortSet != "" || r.NfprotoSet != "" ||
		r.CtDNAT || r.Mark != nil {
		return kindOther
	}
	switch {
	case r.SrcDPortSet == firewall.SetGrants4 || r.SrcDPortSet == firewall.SetGrants6:
		if r.DPortSet == "" {
			return kindGrant
		}
	case r.SrcDPortSet == "" && (r.DPortSet == firewall.SetKnockTCP || r.DPortSet == firewall.SetProtected || r.DPortSet == firewall.SetFwdPorts):
		return kindPort
	}
	return kindOther
}

// independent reports whether a rule that stays in the base chain, after
// the dispatch rule, decides a SYN to a dispatched port as it would have
// before the rules moved: it does not match TCP at all, or it only queues
// (as each dispatched chain but the knocks' ends by doing), touching
// nothing.
func independent(r *firewall.Rule) bool {
	if r == nil {
		return false
	}
	if r.Proto != 0 && r.Proto != rules.ProtoTCP {
		return true
	}
	return r.Verdict.Kind == firewall.VerdictQueue && r.ClearMark == 0 && r.OrMark == 0 && r.AddSrc == "" && r.AddNfproto == ""
}

// terminalQueue reports whether r matches every TCP SYN to its port set
// and queues it.
func terminalQueue(r *firewall.Rule) bool {
	return r.Family == firewall.FamilyAny && !r.DstLocal && r.SrcDPortSet == "" && r.AddSrc == "" && r.AddNfproto == "" &&
		r.ClearMark == 0 && r.OrMark == 0 && r.Verdict.Kind == firewall.VerdictQueue
}

// dispatchPorts lists each dispatched set's port ranges; ok is false when
// a port is in two sets or twice in one (the plain chain's order would
// decide), or there are more than dispatchMaxRanges.
func dispatchPorts(p *firewall.Plan) (map[string][]firewall.PortRange, bool) {
	out := map[string][]firewall.PortRange{}
	var all []firewall.PortRange
	for _, name := range dispatchSets {
		if s := p.Set(name); s != nil {
			out[name] = s.Ports
			all = append(all, s.Ports...)
		}
	}
	if len(all) > dispatchMaxRanges {
		return nil, false
	}
	slices.SortFunc(all, func(a, b firewall.PortRange) int { return int(a.Lo) - int(b.Lo) })
	for i := 1; i < len(all); i++ {
		if all[i].Lo <= all[i-1].Hi {
			return nil, false
		}
	}
	return out, true
}

// mapElems are the verdict map's elements: each range's first port with
// its jump and, in an interval map, the port after its last as the end of
// the interval (left out where the next range starts there, or past 65535).
func mapElems(jumps []portJump) (elems []nftables.SetElement, interval bool) {
	js := slices.Clone(jumps)
	slices.SortFunc(js, func(a, b portJump) int { return int(a.lo) - int(b.lo) })
	for _, j := range js {
		interval = interval || j.lo != j.hi
	}
	for i, j := range js {
		elems = append(elems, nftables.SetElement{Key: port(j.lo), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: j.chain}})
		if interval && j.hi < 65535 && (i+1 == len(js) || js[i+1].lo != j.hi+1) {
			elems = append(elems, nftables.SetElement{Key: port(j.hi + 1), IntervalEnd: true})
		}
	}
	return elems, interval
}

// installedChain is rc as the kernel makes it.
func installedChain(rc *rchain) *nftables.Chain {
	if rc.base != nil {
		return baseChain(rc.base)
	}
	return &nftables.Chain{Name: rc.name, Table: Table}
}

// sameKind reports whether a chain in the kernel can be kept for rc: a
// base chain on rc's hook and priority, or a regular chain.
func sameKind(k *nftables.Chain, rc *rchain) bool {
	if rc.base == nil {
		return k.Hooknum == nil
	}
	return sameHook(k, rc.base)
}

// dispatchExprs renders the dispatch rule: a TCP SYN's destination port
// looked up in an anonymous verdict map (made in the same batch, deleted
// with the rule) that jumps to the chain of its port set.
func dispatchExprs(c *nftables.Conn, jumps []portJump, th bool) ([]expr.Any, error) {
	elems, interval := mapElems(jumps)
	m := &nftables.Set{Table: Table, Anonymous: true, Constant: true, IsMap: true, Interval: interval,
		KeyType: nftables.TypeInetService, DataType: nftables.TypeVerdict}
	if err := c.AddSet(m, elems); err != nil {
		return nil, err
	}
	var e []expr.Any
	if !th {
		e = synMatch()
	}
	return append(e,
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: reg1},
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
	), nil
}

// synMatch matches a TCP SYN: the protocol, then SYN alone of FIN, SYN,
// RST and ACK.
func synMatch() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1, DestRegister: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{tcpFlags}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x02}},
	}
}
