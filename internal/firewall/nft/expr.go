package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Registers: the 16-byte register 1 (32-bit registers 8 to 11) and the
// 32-bit register after a 4- or 16-byte first field of a concatenation.
const (
	reg1     = 1
	reg32v4  = 9  // after an IPv4 address in register 1
	reg32v6  = 12 // after an IPv6 address in registers 8-11
	tcpFlags = 0x17
)

// exprs renders one rule.
func (b *Backend) exprs(tr taggedRule, sets map[string]*nftables.Set) ([]expr.Any, error) {
	if tr.r == nil {
		return entryExprs(tr.entry, sets)
	}
	r := tr.r
	var e []expr.Any
	set := func(name string) (*nftables.Set, error) { return findSet(sets, name) }
	lookup := func(name string, reg uint32, invert bool) error {
		l, err := lookupExpr(sets, name, reg, invert)
		if err != nil {
			return err
		}
		e = append(e, l)
		return nil
	}
	fam := r.Family
	if r.SrcSet != "" || r.SrcDPortSet != "" || r.AddSrc != "" {
		if fam == firewall.FamilyAny {
			return nil, errors.New("a source address match needs a family")
		}
	}
	if fam != firewall.FamilyAny {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto(fam)}})
	}
	if r.Proto != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{r.Proto}})
	}
	if r.SYN {
		e = append(e,
			&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1, DestRegister: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{tcpFlags}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x02}})
	}
	if r.CtNew {
		e = append(e,
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, ctStateNew), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)})
	}
	if r.DstLocal {
		e = append(e,
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)})
	}
	if r.DPortSet != "" {
		if r.Proto == 0 && !tr.th {
			return nil, errors.New("a port match needs a protocol")
		}
		e = append(e, &expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: reg1})
		if err := lookup(r.DPortSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if r.DstPortSet != "" {
		s, err := set(r.DstPortSet)
		if err != nil {
			return nil, err
		}
		v6 := s.KeyType.Bytes == 20
		e = append(e, daddr(v6), dport(v6))
		if err := lookup(r.DstPortSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if r.CtDNAT {
		e = append(e,
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
			&expr.Ct{Register: reg1, Key: expr.CtKeyPROTODST, Direction: 0})
		if err := lookup(r.CtOrigDPortSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if r.NfprotoSet != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1})
		if err := lookup(r.NfprotoSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if r.SrcSet != "" {
		e = append(e, saddr(fam == firewall.FamilyIPv6))
		if err := lookup(r.SrcSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if r.SrcDPortSet != "" {
		v6 := fam == firewall.FamilyIPv6
		e = append(e, saddr(v6), dport(v6))
		if err := lookup(r.SrcDPortSet, reg1, false); err != nil {
			return nil, err
		}
	}
	if m := r.Mark; m != nil {
		op := expr.CmpOpEq
		if m.Not {
			op = expr.CmpOpNeq
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(m.Mask), Xor: u32(0)},
			&expr.Cmp{Op: op, Register: reg1, Data: u32(m.Value)})
	}
	// Statements.
	if r.ClearMark != 0 || r.OrMark != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(^r.ClearMark), Xor: u32(r.OrMark)},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true})
	}
	if r.AddSrc != "" {
		s, err := set(r.AddSrc)
		if err != nil {
			return nil, err
		}
		e = append(e, saddr(fam == firewall.FamilyIPv6),
			&expr.Dynset{SrcRegKey: reg1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: r.Timeout})
	}
	if r.AddNfproto != "" {
		s, err := set(r.AddNfproto)
		if err != nil {
			return nil, err
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Dynset{SrcRegKey: reg1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: r.Timeout})
	}
	switch v := r.Verdict; v.Kind {
	case firewall.VerdictNone:
	case firewall.VerdictAccept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case firewall.VerdictDrop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case firewall.VerdictQueue:
		e = append(e, b.queue(v))
	case firewall.VerdictRejectTCP:
		e = append(e, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	case firewall.VerdictRejectUnreach:
		e = append(e, &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
	default:
		return nil, fmt.Errorf("verdict %d: %w", v.Kind, firewall.ErrUnsupported)
	}
	return e, nil
}

// ctStateNew is NF_CT_STATE_BIT(IP_CT_NEW) of the conntrack state: the
// packet opens a flow conntrack has not seen a reply of.
const ctStateNew = 1 << 3

// ipsDstNAT is IPS_DST_NAT of the conntrack status: the connection's
// destination was rewritten (DNAT, a port forward).
const ipsDstNAT = 1 << 5

// NFQUEUE flags (xt_NFQUEUE.h).
const (
	nfqFlagBypass    = 0x01
	nfqFlagCPUFanout = 0x02
)

func (b *Backend) queue(v firewall.Verdict) expr.Any {
	total := max(v.QueueCount, 1)
	if b.compatQueue {
		flags := uint16(nfqFlagBypass)
		if total > 1 {
			flags |= nfqFlagCPUFanout
		}
		// struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags; }
		// in host byte order, padded to 8 bytes.
		info := make(xt.Unknown, 8)
		binary.NativeEndian.PutUint16(info[0:], v.QueueNum)
		binary.NativeEndian.PutUint16(info[2:], total)
		binary.NativeEndian.PutUint16(info[4:], flags)
		return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
	}
	flag := expr.QueueFlagBypass
	if total > 1 {
		flag |= expr.QueueFlagFanout
	}
	return &expr.Queue{Num: v.QueueNum, Total: total, Flag: flag}
}

func nfproto(f firewall.Family) byte {
	if f == firewall.FamilyIPv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

func saddr(v6 bool) expr.Any {
	if v6 {
		return &expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16, DestRegister: reg1}
	}
	return &expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4, DestRegister: reg1}
}

func daddr(v6 bool) expr.Any {
	if v6 {
		return &expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16, DestRegister: reg1}
	}
	return &expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4, DestRegister: reg1}
}

// dport loads the destination port after an address in a concatenation.
func dport(v6 bool) expr.Any {
	reg := uint32(reg32v4)
	if v6 {
		reg = reg32v6
	}
	return &expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: reg}
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ifname is an interface name as meta iifname compares it: NUL-terminated.
func ifname(s string) []byte { return append([]byte(s), 0) }

// entryExprs renders a chain's entry rule.
func entryExprs(en entry, sets map[string]*nftables.Set) ([]expr.Any, error) {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	switch en {
	case entryLo:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname("lo")},
			accept,
		}, nil
	case entryTrusted:
		l, err := lookupExpr(sets, firewall.SetTrusted, reg1, false)
		if err != nil {
			return nil, err
		}
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, l, accept}, nil
	case entrySYN:
		return append(synMatch(), &expr.Verdict{Kind: expr.VerdictGoto, Chain: synChain}), nil
	case entryScope4, entryScope6:
		v6 := en == entryScope6
		fam, set := firewall.FamilyIPv4, firewall.SetRouted4
		if v6 {
			fam, set = firewall.FamilyIPv6, firewall.SetRouted6
		}
		l, err := lookupExpr(sets, set, reg1, true)
		if err != nil {
			return nil, err
		}
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto(fam)}},
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
			daddr(v6), l, accept,
		}, nil
	}
	return nil, fmt.Errorf("entry %d: %w", en, firewall.ErrUnsupported)
}
