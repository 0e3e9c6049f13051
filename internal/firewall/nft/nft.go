// Package nft renders a firewall.Plan as nftables and applies it over
// netlink (github.com/google/nftables): one table, inet knockwall, changed
// in one netlink batch per Apply, so each change is atomic and no binary
// (nft, iptables) is needed at run time.
//
// Base chains are never deleted while the daemon runs: the kernel drops
// everything waiting in the namespace's queues when a hook goes away, so a
// reload changes rules and set elements in place (only a start that turns
// an ordinary table into an owned one, or back, makes the table afresh).
// Every rule carries a comment (firewall.Tag) by which Check finds it
// again, and Check compares content too (check.go). Where the kernel can,
// the table is owned and persistent (owner.go); on the fast path SYNs are
// dispatched by destination port (dispatch.go).
//
// Kernels built without the native queue expression (CONFIG_NFT_QUEUE) get
// the xtables NFQUEUE target through nft_compat instead; `nft list` prints
// both as "queue num N bypass". The choice is made once, by a probe batch
// that creates nothing.
package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/firewall"
)

// Table is knockwall's table.
var Table = &nftables.Table{Name: firewall.Owner, Family: nftables.TableFamilyINet}

// Backend applies plans over netlink. It is safe for concurrent use: one
// mutex orders the batches.
//
// Where the kernel has them (Linux 6.9), the table is owned and persistent
// (owner.go): only this backend's socket may change it, and it stays when
// the process ends, to be adopted by the next start. Elsewhere (or with
// WithOwnedTable(false)) it is an ordinary table, and the daemon's
// self-heal puts back what others change.
type Backend struct {
	mu   sync.Mutex
	conn *nftables.Conn
	// own is conn's socket: every write goes through it, so that in
	// owned mode the kernel takes it from the table's owner.
	own *netlink.Conn
	// owned: Apply makes the table owned and persistent. ownedErr says
	// why not: the kernel refused, or the configuration said no.
	owned    bool
	ownedErr error
	// nl lists rules for Check, their comments and their expressions
	// undecoded: google/nftables decodes whole rules and fails on some it
	// can write (a ct expression with a direction).
	nl *netlink.Conn
	// compatQueue: the kernel lacks the native queue expression; use
	// the xtables NFQUEUE target.
	compatQueue bool
	// sets are the sets of the table as last applied, by name, for
	// element writes.
	sets map[string]*nftables.Set
	// installed is each chain's rules as the kernel listed them right
	// after the last Apply, for Check to compare their bodies with.
	installed map[string][]kernelRule
}

// Option tunes New.
type Option func(*options)

type options struct {
	netns int
	owned bool
}

// WithNetNS makes the backend work in the network namespace open as fd
// (tests); by default it works in the caller's.
func WithNetNS(fd int) Option { return func(o *options) { o.netns = fd } }

// WithOwnedTable says whether Apply makes the table owned and persistent
// where the kernel can (the default), or an ordinary table that other
// processes may change (firewall.owned_table: false). Remove adopts an
// owned table left by another process either way.
func WithOwnedTable(on bool) Option { return func(o *options) { o.owned = on } }

// New opens a netlink connection and probes the kernel.
func New(opts ...Option) (*Backend, error) {
	o := options{netns: -1, owned: true}
	for _, opt := range opts {
		opt(&o)
	}
	var own *netlink.Conn
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		own = c
		return nil
	})}
	if o.netns >= 0 {
		copts = append(copts, nftables.WithNetNSFd(o.netns))
	}
	c, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	if own == nil {
		c.CloseLasting()
		return nil, errors.New("nftables: no netlink socket")
	}
	ncfg := &netlink.Config{}
	if o.netns >= 0 {
		ncfg.NetNS = o.netns
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, ncfg)
	if err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	b := &Backend{conn: c, own: own, nl: nl, sets: map[string]*nftables.Set{}}
	if err := b.probe(); err != nil {
		b.Close()
		return nil, err
	}
	if o.owned {
		b.ownedErr = b.probeOwner()
		b.owned = b.ownedErr == nil
	} else {
		b.ownedErr = errors.New("firewall.owned_table is false")
	}
	return b, nil
}

// Mode implements firewall.ModeReporter.
func (b *Backend) Mode() (string, error) {
	if b.owned {
		return firewall.ModeOwned, nil
	}
	return firewall.ModeSelfHeal, b.ownedErr
}

// Available reports whether the kernel answers nf_tables netlink (for
// firewall.backend: auto).
func Available() bool {
	c, err := nftables.New()
	if err != nil {
		return false
	}
	_, err = c.ListTablesOfFamily(nftables.TableFamilyINet)
	return err == nil
}

// probeTable is created and deleted in the same batch by the probe.
const probeTable = "knockwall_probe"

// probe finds out whether the kernel has the native queue expression: a
// batch that adds a rule with it to a throwaway table and deletes the
// table again either fails (no such expression) or changes nothing.
func (b *Backend) probe() error {
	t := &nftables.Table{Name: probeTable, Family: nftables.TableFamilyINet}
	b.conn.AddTable(t)
	ch := b.conn.AddChain(&nftables.Chain{Name: "probe", Table: t})
	b.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Queue{Num: 0, Total: 1, Flag: expr.QueueFlagBypass}}})
	b.conn.DelTable(t)
	err := b.conn.Flush()
	switch {
	case err == nil:
	case errors.Is(err, syscall.ENOENT):
		b.compatQueue = true
		drain(b.own)
	default:
		return fmt.Errorf("nftables: probe: %w", err)
	}
	return nil
}

// Name implements firewall.Backend.
func (*Backend) Name() string { return "nftables" }

// Close implements firewall.Backend.
func (b *Backend) Close() error {
	var errs []error
	if b.nl != nil {
		errs = append(errs, b.nl.Close())
	}
	if b.conn != nil {
		errs = append(errs, b.conn.CloseLasting())
	}
	return errors.Join(errs...)
}

// state is what the kernel holds of knockwall's table.
type state struct {
	exists bool
	flags  uint32 // the table's
	chains map[string]*nftables.Chain
	sets   map[string]*nftables.Set
}

func (b *Backend) read() (*state, error) {
	st := &state{chains: map[string]*nftables.Chain{}, sets: map[string]*nftables.Set{}}
	tables, err := b.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == Table.Name {
			st.exists, st.flags = true, tableFlags(t)
		}
	}
	if !st.exists {
		return st, nil
	}
	chains, err := b.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table.Name == Table.Name {
			st.chains[c.Name] = c
		}
	}
	sets, err := b.conn.GetSets(Table)
	if err != nil {
		return nil, fmt.Errorf("nftables: list sets: %w", err)
	}
	for _, s := range sets {
		st.sets[s.Name] = s
	}
	return st, nil
}

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

// taggedRule is a plan rule, or one of the chain's own entry rules, with
// its tag.
type taggedRule struct {
	r     *firewall.Rule // nil: an entry rule, as entry says
	entry entry
	jumps []portJump // entryDispatch's verdict map
	// th: the rule sits in a chain only TCP SYNs reach (dispatch.go): its
	// own protocol, SYN and port matches are left out, and the script
	// names the TCP header as nft does without them.
	th  bool
	tag string
}

// entry is a rule a chain's properties make: packets that skip the chain
// are accepted there (which in a base chain means: on to the next one).
type entry uint8

const (
	entryNone    entry = iota
	entryLo            // iifname "lo" accept
	entryTrusted       // iifname @trusted accept
	entryScope4        // meta nfproto ipv4 fib daddr type != local ip daddr != @routed4 accept
	entryScope6        // the same for IPv6
	// entryDispatch: TCP SYNs jump by destination port to the chain of
	// their port set (dispatch.go).
	entryDispatch
	// entrySYN: TCP SYNs go to the chain of the rules about them.
	entrySYN
)

var entryNames = [...]string{"", "lo", "trusted", "scope4", "scope6", "dispatch", "syn"}

// chainRules lists the rules of c as installed: the entry rules (loopback,
// trusted interfaces, destination scope) first.
func chainRules(c *firewall.Chain) []taggedRule {
	var out []taggedRule
	add := func(e entry) {
		out = append(out, taggedRule{entry: e, tag: firewall.Owner + " " + c.Name + " " + entryNames[e]})
	}
	if c.SkipLoopback {
		add(entryLo)
	}
	if len(c.Trusted) > 0 {
		add(entryTrusted)
	}
	if c.Scope != nil {
		add(entryScope4)
		add(entryScope6)
	}
	for i := range c.Rules {
		out = append(out, taggedRule{r: &c.Rules[i], tag: firewall.Tag(c.Name, i, &c.Rules[i])})
	}
	return out
}

func comment(tag string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, tag)
}

func sameHook(k *nftables.Chain, p *firewall.Chain) bool {
	if p == nil || k.Hooknum == nil || k.Priority == nil || k.Type != nftables.ChainTypeFilter {
		return false
	}
	return *k.Hooknum == *hookOf(p.Hook) && int32(*k.Priority) == int32(p.Priority)
}

func hookOf(h firewall.Hook) *nftables.ChainHook {
	switch h {
	case firewall.HookPrerouting:
		return nftables.ChainHookPrerouting
	case firewall.HookForward:
		return nftables.ChainHookForward
	}
	return nftables.ChainHookInput
}

func baseChain(pc *firewall.Chain) *nftables.Chain {
	prio := nftables.ChainPriority(pc.Priority)
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: pc.Name, Table: Table, Type: nftables.ChainTypeFilter,
		Hooknum: hookOf(pc.Hook), Priority: &prio, Policy: &policy}
}

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
