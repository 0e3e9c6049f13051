package nft

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Apply implements firewall.Backend, in one batch: knockwall's chains are
// emptied and refilled, sets made to match (constant ones refilled,
// dynamic ones kept with their elements), and what the plan no longer
// names deleted. A chain whose hook or priority changed is replaced.
func (b *Backend) Apply(_ context.Context, p *firewall.Plan) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.read()
	if err != nil {
		return err
	}
	if st.exists && st.flags&tablePersist != 0 {
		if err := b.adopt(); err != nil {
			return err
		}
	}
	head, fresh := b.tableHead(st)
	if fresh {
		st = &state{chains: map[string]*nftables.Chain{}, sets: map[string]*nftables.Set{}}
	}
	c, recorded, err := recorder()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	chains := layout(p)
	wanted := map[string]*rchain{}
	for i := range chains {
		wanted[chains[i].name] = &chains[i]
	}
	// First empty every chain of ours, so no rule refers to a set that
	// changes below, or to a chain deleted below.
	for name := range st.chains {
		c.FlushChain(&nftables.Chain{Name: name, Table: Table})
	}
	for name, ch := range st.chains {
		if w := wanted[name]; w == nil || !sameKind(ch, w) {
			c.DelChain(&nftables.Chain{Name: name, Table: Table})
			delete(st.chains, name)
		}
	}
	sets := map[string]*nftables.Set{}
	wantSet := map[string]bool{}
	for i := range p.Sets {
		ps := &p.Sets[i]
		wantSet[ps.Name] = true
		ns, elems, err := newSet(ps)
		if err != nil {
			return err
		}
		if old, ok := st.sets[ps.Name]; ok && sameSet(old, ns) {
			if !ps.Dynamic || (p.FreshGrants && ps.Kind == firewall.KindAddrPort4 || p.FreshGrants && ps.Kind == firewall.KindAddrPort6) {
				c.FlushSet(old)
				if len(elems) > 0 {
					if err := c.SetAddElements(old, elems); err != nil {
						return fmt.Errorf("nftables: set %s: %w", ps.Name, err)
					}
				}
			}
			sets[ps.Name] = old
			continue
		} else if ok {
			c.DelSet(old)
		}
		if err := c.AddSet(ns, elems); err != nil {
			return fmt.Errorf("nftables: set %s: %w", ps.Name, err)
		}
		sets[ps.Name] = ns
	}
	for name, s := range st.sets {
		// An anonymous set (the dispatch map) goes with its rule.
		if !wantSet[name] && !s.Anonymous {
			c.DelSet(s)
		}
	}
	for _, rc := range chains {
		// Added again when it exists: that sets a base chain's policy
		// back.
		ch := c.AddChain(installedChain(&rc))
		for ri, r := range rc.rules {
			var ex []expr.Any
			var err error
			if r.entry == entryDispatch {
				ex, err = dispatchExprs(c, r.jumps, r.th)
			} else {
				ex, err = b.exprs(r, sets)
			}
			if err != nil {
				return fmt.Errorf("nftables: chain %s rule %d: %w", rc.name, ri, err)
			}
			c.AddRule(&nftables.Rule{Table: Table, Chain: ch, Exprs: ex, UserData: comment(r.tag)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply: %w", err)
	}
	if err := b.send(append(head, *recorded...)); err != nil {
		return fmt.Errorf("nftables: apply: %w", err)
	}
	b.sets = sets
	return b.snapshot(p)
}

// Remove implements firewall.Backend.
func (b *Backend) Remove(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.read()
	if err != nil {
		return err
	}
	if !st.exists {
		return nil
	}
	if st.flags&tablePersist != 0 {
		if err := b.adopt(); err != nil {
			return err
		}
	}
	if err := b.send([]netlink.Message{tableMsg(unix.NFT_MSG_DELTABLE, Table.Name, 0)}); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("nftables: delete table: %w", err)
	}
	b.sets = map[string]*nftables.Set{}
	b.installed = nil
	return nil
}
