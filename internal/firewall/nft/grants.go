package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"

	"github.com/knockwall/knockwall/internal/firewall"
)

// grantSet is the grant set of a source's family.
func (b *Backend) grantSet(src netip.Addr) (*nftables.Set, bool) {
	name := firewall.SetGrants4
	if src.Is6() {
		name = firewall.SetGrants6
	}
	s, ok := b.sets[name]
	return s, ok
}

// Grant elements go to the kernel in bounded pieces: a netlink attribute's
// length is 16 bits, so one NEWSETELEM message holds at most a few
// thousand elements, and a batch must fit the socket's send buffer.
const (
	elemsPerMsg  = 256
	elemsPerSend = 8 * elemsPerMsg
)

// elemOp is one change to a grant set.
type elemOp struct {
	set *nftables.Set
	del bool
	el  nftables.SetElement
}

// writeElems sends ops in order, elemsPerSend at a time; first, if given,
// runs at the head of the first batch (the flushes of a replace). Pieces
// that are not the last leave the sets between two states: a source
// missing from them meanwhile is judged in user space, where the tracker
// still grants it, so splitting costs speed, never safety.
func (b *Backend) writeElems(ops []elemOp, first func()) error {
	for start := 0; ; start += elemsPerSend {
		if start == 0 && first != nil {
			first()
		}
		end := min(start+elemsPerSend, len(ops))
		for i := start; i < end; {
			// One message: a run of the same set and kind, at most
			// elemsPerMsg long.
			j := i + 1
			for j < end && j-i < elemsPerMsg && ops[j].set == ops[i].set && ops[j].del == ops[i].del {
				j++
			}
			els := make([]nftables.SetElement, 0, j-i)
			for _, op := range ops[i:j] {
				els = append(els, op.el)
			}
			var err error
			if ops[i].del {
				err = b.conn.SetDeleteElements(ops[i].set, els)
			} else {
				err = b.conn.SetAddElements(ops[i].set, els)
			}
			if err != nil {
				return err
			}
			i = j
		}
		if err := b.conn.Flush(); err != nil {
			// google/nftables stops reading at some errors: the rest
			// of the batch's answers must not be taken for the next
			// request's.
			drain(b.own)
			return fmt.Errorf("nftables: grant elements: %w", err)
		}
		if end == len(ops) {
			return nil
		}
	}
}

// UpdateGrants implements firewall.GrantWriter. A refreshed element is
// deleted and added again: before Linux 6.12, adding an element that
// exists does not change its timeout.
func (b *Backend) UpdateGrants(_ context.Context, add, del []firewall.GrantElem) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	ops := make([]elemOp, 0, len(add)+len(del))
	for _, g := range del {
		s, ok := b.grantSet(g.Src)
		if !ok {
			return errNoGrantSets
		}
		ops = append(ops, elemOp{set: s, del: true, el: nftables.SetElement{Key: addrPort(g.Src, g.Port)}})
	}
	for _, g := range add {
		s, ok := b.grantSet(g.Src)
		if !ok {
			return errNoGrantSets
		}
		ops = append(ops, elemOp{set: s, el: nftables.SetElement{Key: addrPort(g.Src, g.Port), Timeout: g.Timeout}})
	}
	if len(ops) == 0 {
		return nil
	}
	return b.writeElems(ops, nil)
}

// ReadGrants implements firewall.GrantWriter.
func (b *Backend) ReadGrants(context.Context) ([]firewall.GrantElem, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []firewall.GrantElem
	for _, name := range []string{firewall.SetGrants4, firewall.SetGrants6} {
		s, ok := b.sets[name]
		if !ok {
			return nil, errNoGrantSets
		}
		els, err := b.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nftables: set %s elements: %w", name, err)
		}
		n := 4
		if name == firewall.SetGrants6 {
			n = 16
		}
		for _, e := range els {
			if len(e.Key) < n+2 {
				continue
			}
			a, _ := netip.AddrFromSlice(e.Key[:n])
			out = append(out, firewall.GrantElem{Src: a, Port: binary.BigEndian.Uint16(e.Key[n:]), Timeout: e.Expires})
		}
	}
	return out, nil
}

var errNoGrantSets = errors.New("nftables: no grant sets (apply a fast-path plan first)")

// ReplaceGrants implements firewall.GrantWriter: both grant sets flushed
// and refilled, in one batch when all fits in one (see writeElems).
func (b *Backend) ReplaceGrants(_ context.Context, all []firewall.GrantElem) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s4, ok4 := b.sets[firewall.SetGrants4]
	s6, ok6 := b.sets[firewall.SetGrants6]
	if !ok4 || !ok6 {
		return errNoGrantSets
	}
	// IPv4 first, then IPv6: runs of one set make fewer messages.
	var ops4, ops6 []elemOp
	for _, g := range all {
		op := elemOp{el: nftables.SetElement{Key: addrPort(g.Src, g.Port), Timeout: g.Timeout}}
		if g.Src.Is6() {
			op.set = s6
			ops6 = append(ops6, op)
		} else {
			op.set = s4
			ops4 = append(ops4, op)
		}
	}
	return b.writeElems(append(ops4, ops6...), func() {
		b.conn.FlushSet(s4)
		b.conn.FlushSet(s6)
	})
}

var (
	_ firewall.Backend     = (*Backend)(nil)
	_ firewall.GrantWriter = (*Backend)(nil)
)
