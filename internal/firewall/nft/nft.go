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
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
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
