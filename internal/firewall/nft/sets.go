package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/knockwall/knockwall/internal/firewall"
)

// newSet builds the kernel set for ps and its elements.
func newSet(ps *firewall.Set) (*nftables.Set, []nftables.SetElement, error) {
	s, err := setHeader(ps)
	if err != nil {
		return nil, nil, err
	}
	var elems []nftables.SetElement
	switch ps.Kind {
	case firewall.KindPorts:
		for _, r := range ps.Ports {
			elems = append(elems, nftables.SetElement{Key: port(r.Lo)})
			if s.Interval && r.Hi < 65535 {
				elems = append(elems, nftables.SetElement{Key: port(r.Hi + 1), IntervalEnd: true})
			}
		}
	case firewall.KindPrefixPort4, firewall.KindPrefixPort6:
		for _, hp := range ps.HostPorts {
			lo, hi := prefixRange(hp.Prefix)
			elems = append(elems, nftables.SetElement{Key: addrPort(lo, hp.Port), KeyEnd: addrPort(hi, hp.Port)})
		}
	case firewall.KindPrefix4, firewall.KindPrefix6:
		for _, pfx := range ps.Prefixes {
			lo, hi := prefixRange(pfx)
			elems = append(elems, nftables.SetElement{Key: lo.AsSlice()})
			if next := hi.Next(); next.IsValid() {
				elems = append(elems, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
			}
		}
	case firewall.KindIfnames:
		for _, n := range ps.Ifnames {
			k := make([]byte, 16) // IFNAMSIZ, NUL-padded
			copy(k, n)
			elems = append(elems, nftables.SetElement{Key: k})
		}
	}
	return s, elems, nil
}

// setHeader builds the kernel set for ps without its elements: its name,
// key type and flags. The nft script (render.go) declares it from this too.
func setHeader(ps *firewall.Set) (*nftables.Set, error) {
	s := &nftables.Set{Table: Table, Name: ps.Name}
	switch ps.Kind {
	case firewall.KindPorts:
		s.KeyType = nftables.TypeInetService
	case firewall.KindAddrPort4, firewall.KindPrefixPort4:
		s.KeyType, s.Concatenation = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService), true
	case firewall.KindAddrPort6, firewall.KindPrefixPort6:
		s.KeyType, s.Concatenation = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService), true
	case firewall.KindAddr4, firewall.KindPrefix4:
		s.KeyType = nftables.TypeIPAddr
	case firewall.KindAddr6, firewall.KindPrefix6:
		s.KeyType = nftables.TypeIP6Addr
	case firewall.KindNfproto:
		s.KeyType = nftables.TypeNFProto
	case firewall.KindIfnames:
		// A string, kept in host byte order, as nft keeps it: nft
		// prints the names back only when the set says so.
		s.KeyType, s.KeyByteOrder = nftables.TypeIFName, binaryutil.NativeEndian
	default:
		return nil, fmt.Errorf("set %s: kind %d: %w", ps.Name, ps.Kind, firewall.ErrUnsupported)
	}
	s.Interval = ps.Interval()
	if ps.Dynamic {
		s.HasTimeout = true
		s.Size = ps.Size
		// Sets the data plane writes (progress, degraded) need the
		// dynamic flag; grant sets are written by the daemon only.
		s.Dynamic = ps.Kind == firewall.KindAddr4 || ps.Kind == firewall.KindAddr6 || ps.Kind == firewall.KindNfproto
	}
	return s, nil
}

// findSet is the set named name.
func findSet(sets map[string]*nftables.Set, name string) (*nftables.Set, error) {
	s, ok := sets[name]
	if !ok {
		return nil, fmt.Errorf("no set %q", name)
	}
	return s, nil
}

// lookupExpr matches register reg against the set named name (or, with
// invert, its absence).
func lookupExpr(sets map[string]*nftables.Set, name string, reg uint32, invert bool) (expr.Any, error) {
	s, err := findSet(sets, name)
	if err != nil {
		return nil, err
	}
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID, Invert: invert}, nil
}

// sameSet reports whether a set in the kernel has the type and flags of
// the wanted one, so that it can be kept. A size is not compared: a
// dynamic set keeps its elements and the size it was made with until the
// table is made afresh.
func sameSet(k, w *nftables.Set) bool {
	return k.KeyType.GetNFTMagic() == w.KeyType.GetNFTMagic() && k.KeyType.Bytes == w.KeyType.Bytes &&
		k.Interval == w.Interval && k.HasTimeout == w.HasTimeout && k.Dynamic == w.Dynamic &&
		k.Concatenation == w.Concatenation
}

func port(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// addrPort is the key of an address . port concatenation: each field
// padded to 4 bytes.
func addrPort(a netip.Addr, p uint16) []byte {
	return append(a.AsSlice(), byte(p>>8), byte(p), 0, 0)
}

// prefixRange is the first and last address of pfx.
func prefixRange(pfx netip.Prefix) (netip.Addr, netip.Addr) {
	pfx = pfx.Masked()
	lo := pfx.Addr()
	b := lo.AsSlice()
	bits := pfx.Bits()
	for i := range b {
		if rem := bits - 8*i; rem < 8 {
			if rem < 0 {
				rem = 0
			}
			b[i] |= byte(0xff >> rem)
		}
	}
	hi, _ := netip.AddrFromSlice(b)
	return lo, hi
}
