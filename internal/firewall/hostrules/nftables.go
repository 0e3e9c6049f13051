package hostrules

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Lister is the read side of an nftables connection (*nftables.Conn).
type Lister interface {
	ListTables() ([]*nftables.Table, error)
	ListChains() ([]*nftables.Chain, error)
	GetRules(*nftables.Table, *nftables.Chain) ([]*nftables.Rule, error)
	GetSets(*nftables.Table) ([]*nftables.Set, error)
	GetSetElements(*nftables.Set) ([]nftables.SetElement, error)
}

// Nftables finds the rules of every table but knockwall's (families inet,
// ip and ip6) that open w's ports without the accept mark: rules reachable
// from base chains on the input hook. A chain whose rules cannot be read
// (google/nftables does not decode every expression) is named in unread.
func Nftables(l Lister, w Want) (found []Finding, unread []string, err error) {
	tables, err := l.ListTables()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	chains, err := l.ListChains()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	for _, t := range tables {
		switch t.Family {
		case nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6:
		default:
			continue
		}
		if t.Family == nftables.TableFamilyINet && t.Name == firewall.Owner {
			continue
		}
		var mine []*nftables.Chain
		for _, c := range chains {
			if c.Table != nil && c.Table.Name == t.Name && c.Table.Family == t.Family {
				mine = append(mine, c)
			}
		}
		f, u := nftTable(l, t, mine, &w)
		found = append(found, f...)
		unread = append(unread, u...)
	}
	return found, unread, nil
}

// nftTable analyses one table.
func nftTable(l Lister, t *nftables.Table, chains []*nftables.Chain, w *Want) (found []Finding, unread []string) {
	where := fmt.Sprintf("nftables table %s %s", familyName(t.Family), t.Name)
	var sets map[string]*nftables.Set
	g := graph[nftRule]{rules: map[string][]nftRule{}, jumps: map[string][]string{}}
	var starts []string
	for _, c := range chains {
		if c.Hooknum != nil && *c.Hooknum == *nftables.ChainHookInput {
			starts = append(starts, c.Name)
		}
	}
	slices.Sort(starts)
	for _, name := range g.reachableFunc(starts, func(name string) []string {
		c := &nftables.Chain{Name: name, Table: t}
		rs, err := l.GetRules(t, c)
		if err != nil {
			unread = append(unread, fmt.Sprintf("%s chain %s: %v", where, name, err))
			return nil
		}
		var next []string
		for _, r := range rs {
			if sets == nil {
				sets = map[string]*nftables.Set{}
				if all, err := l.GetSets(t); err == nil {
					for _, s := range all {
						sets[s.Name] = s
					}
				}
			}
			nr, target := nftParse(l, sets, r, w.Marks)
			g.rules[name] = append(g.rules[name], nr)
			if target != "" && !nr.trustedOnly(w) {
				next = append(next, target)
			}
		}
		return next
	}) {
		for _, r := range g.rules[name] {
			if ports := r.opens(w); len(ports) > 0 {
				found = append(found, Finding{Where: fmt.Sprintf("%s chain %s handle %d", where, name, r.handle), Rule: r.comment, Ports: ports})
			}
		}
	}
	return found, unread
}

// reachableFunc is reachable with the jumps found by reading each chain
// once, as it is reached.
func (g *graph[R]) reachableFunc(starts []string, read func(string) []string) []string {
	var out []string
	seen := map[string]bool{}
	queue := slices.Clone(starts)
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
		queue = append(queue, read(c)...)
	}
	return out
}

type nftRule struct {
	rule
	handle  uint64
	comment string
}

// What a register holds, as far as the analysis follows it.
type regKind uint8

const (
	regUnknown regKind = iota
	regProto
	regDport
	regMark
	regCtState
	regIifname
)

// ctStateNew is the "new" bit of ct state.
const ctStateNew = 0x08

// nftParse reads one rule's expressions: the protocol, destination port,
// mark, ct state and input interface matches, and the verdict; and the
// chain it jumps or goes to.
func nftParse(l Lister, sets map[string]*nftables.Set, r *nftables.Rule, m firewall.Marks) (nftRule, string) {
	out := nftRule{rule: rule{proto: -1}, handle: r.Handle}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		out.comment = c
	}
	regs := map[uint32]regKind{}
	masks := map[uint32]uint32{} // a bitwise mask applied to a register
	target := ""
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				continue
			}
			k := regUnknown
			switch e.Key {
			case expr.MetaKeyL4PROTO:
				k = regProto
			case expr.MetaKeyMARK:
				k = regMark
			case expr.MetaKeyIIFNAME:
				k = regIifname
			}
			regs[e.Register], masks[e.Register] = k, 0xffffffff
		case *expr.Payload:
			k := regUnknown
			switch {
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
				k = regDport
			case e.Base == expr.PayloadBaseNetworkHeader && e.Len == 1 && (e.Offset == 9 && r.Table.Family == nftables.TableFamilyIPv4 || e.Offset == 6 && r.Table.Family == nftables.TableFamilyIPv6):
				k = regProto
			}
			regs[e.DestRegister], masks[e.DestRegister] = k, 0xffffffff
		case *expr.Ct:
			if e.SourceRegister {
				continue
			}
			k := regUnknown
			if e.Key == expr.CtKeySTATE {
				k = regCtState
			}
			regs[e.Register], masks[e.Register] = k, 0xffffffff
		case *expr.Bitwise:
			if len(e.Mask) == 4 {
				masks[e.DestRegister] = binary.NativeEndian.Uint32(e.Mask)
			}
			regs[e.DestRegister] = regs[e.SourceRegister]
		case *expr.Cmp:
			nftCmp(&out.rule, regs[e.Register], masks[e.Register], e, m)
		case *expr.Range:
			if regs[e.Register] == regDport && len(e.FromData) == 2 && len(e.ToData) == 2 {
				out.ports = []firewall.PortRange{{Lo: binary.BigEndian.Uint16(e.FromData), Hi: binary.BigEndian.Uint16(e.ToData)}}
				out.portsNot = e.Op == expr.CmpOpNeq
			}
		case *expr.Lookup:
			if regs[e.SourceRegister] != regDport || e.IsDestRegSet {
				continue
			}
			s, ok := sets[e.SetName]
			if !ok {
				continue
			}
			if ports, ok := setPorts(l, s); ok {
				out.ports, out.portsNot = ports, e.Invert
			}
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				out.accept = true
			case expr.VerdictJump, expr.VerdictGoto:
				target = e.Chain
			}
		}
	}
	return out, target
}

// nftCmp applies a comparison of a register holding k (masked by mask).
func nftCmp(r *rule, k regKind, mask uint32, e *expr.Cmp, m firewall.Marks) {
	switch k {
	case regProto:
		if len(e.Data) == 1 {
			r.proto, r.protoNot = int(e.Data[0]), e.Op == expr.CmpOpNeq
		}
	case regDport:
		if len(e.Data) != 2 {
			return
		}
		p := binary.BigEndian.Uint16(e.Data)
		switch e.Op {
		case expr.CmpOpEq, expr.CmpOpNeq:
			r.ports, r.portsNot = []firewall.PortRange{{Lo: p, Hi: p}}, e.Op == expr.CmpOpNeq
		case expr.CmpOpGte, expr.CmpOpGt:
			lo := p
			if e.Op == expr.CmpOpGt {
				lo++
			}
			r.ports = narrow(r.ports, lo, 65535)
		case expr.CmpOpLte, expr.CmpOpLt:
			hi := p
			if e.Op == expr.CmpOpLt {
				hi--
			}
			r.ports = narrow(r.ports, 0, hi)
		}
	case regMark:
		if len(e.Data) == 4 && (e.Op == expr.CmpOpEq || e.Op == expr.CmpOpNeq) {
			if requiresAccept(m, mask, binary.NativeEndian.Uint32(e.Data), e.Op == expr.CmpOpEq) {
				r.markAccept = true
			}
		}
	case regCtState:
		// ct state S: (state & S) != 0.
		if len(e.Data) == 4 && e.Op == expr.CmpOpNeq && binary.NativeEndian.Uint32(e.Data) == 0 && mask&ctStateNew == 0 {
			r.notNew = true
		}
	case regIifname:
		name := strings.TrimRight(string(e.Data), "\x00")
		if len(e.Data) > 0 && e.Data[len(e.Data)-1] != 0 {
			name += "*" // a prefix, compared without its NUL: iifname "br-*" trusts no one name
		}
		r.iif, r.iifNot = name, e.Op == expr.CmpOpNeq
	}
}

// narrow intersects a single range (or any port, nil) with [lo, hi].
func narrow(ports []firewall.PortRange, lo, hi uint16) []firewall.PortRange {
	if len(ports) == 1 {
		lo, hi = max(lo, ports[0].Lo), min(hi, ports[0].Hi)
	}
	if lo > hi {
		return []firewall.PortRange{}
	}
	return []firewall.PortRange{{Lo: lo, Hi: hi}}
}

// setPorts reads a set of ports (inet_service): single elements, or
// intervals (start elements, each ended by the next interval end).
func setPorts(l Lister, s *nftables.Set) ([]firewall.PortRange, bool) {
	if s.KeyType.Bytes != 2 || s.IsMap {
		return nil, false
	}
	elems, err := l.GetSetElements(s)
	if err != nil {
		return nil, false
	}
	type edge struct {
		port uint16
		end  bool
	}
	var edges []edge
	for _, e := range elems {
		if len(e.Key) < 2 {
			continue
		}
		edges = append(edges, edge{binary.BigEndian.Uint16(e.Key), e.IntervalEnd})
		if len(e.KeyEnd) >= 2 {
			edges = append(edges, edge{binary.BigEndian.Uint16(e.KeyEnd) + 1, true})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int { return int(a.port) - int(b.port) })
	out := []firewall.PortRange{}
	for i, e := range edges {
		if e.end {
			continue
		}
		hi := e.port
		if s.Interval {
			hi = 65535
			if i+1 < len(edges) && edges[i+1].end {
				hi = edges[i+1].port - 1
			}
		}
		out = append(out, firewall.PortRange{Lo: e.port, Hi: hi})
	}
	return out, true
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprint(f)
}
