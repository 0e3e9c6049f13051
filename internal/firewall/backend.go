package firewall

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"time"
)

// Backend puts a plan in the kernel. Implementations: package nft
// (nftables over netlink) and package ipt (iptables-restore).
type Backend interface {
	// Name is "nftables" or "iptables".
	Name() string
	// Apply makes the kernel hold p: knockwall's chains hold exactly p's
	// rules, chains and sets p does not name are gone, and dynamic set
	// elements (grants, progress) survive. Each table changes in one
	// atomic step, guard first, so a guard rule in place is never absent,
	// not for a moment: a restart, a reload or a failed start never
	// exposes a protected port.
	Apply(ctx context.Context, p *Plan) error
	// Remove removes everything knockwall owns in this backend, guard
	// included. Finding nothing to remove is not an error.
	Remove(ctx context.Context) error
	// Check lists, in words, what of p is missing or different in the
	// kernel; nil when everything is in place.
	Check(ctx context.Context, p *Plan) ([]string, error)
	// Render writes the script that installs p as Apply would: an
	// `nft -f` script, or iptables-restore input.
	Render(w io.Writer, p *Plan) error
	// Close releases what the backend holds (a netlink socket).
	Close() error
}

// ModeReporter is a backend that says how its rules are kept in place.
type ModeReporter interface {
	// Mode is ModeOwned or ModeSelfHeal; with ModeSelfHeal, the error
	// says why the rules are not owned (nil when the backend never
	// owns them).
	Mode() (string, error)
}

// How a backend's rules are kept in place.
const (
	// ModeOwned: the kernel refuses every other process's change to the
	// rules (an owned, persistent nftables table, Linux 6.9 and later),
	// and they stay when knockwall exits.
	ModeOwned = "owned"
	// ModeSelfHeal: other processes may change or remove the rules; the
	// daemon notices and puts them back (see daemon.WatchEvery).
	ModeSelfHeal = "self-heal"
)

// GrantWriter mirrors grants into the kernel's fast-path sets. Only the
// nftables backend implements it.
type GrantWriter interface {
	// UpdateGrants deletes del and adds (or refreshes) add, in one batch.
	UpdateGrants(ctx context.Context, add, del []GrantElem) error
	// ReplaceGrants makes the grant sets hold exactly all.
	ReplaceGrants(ctx context.Context, all []GrantElem) error
	// ReadGrants lists what the grant sets hold, each element with the
	// time it has left there.
	ReadGrants(ctx context.Context) ([]GrantElem, error)
}

// GrantElem is one (source, protected port) element of a grant set, with
// the grant's remaining life.
type GrantElem struct {
	Src     netip.Addr
	Port    uint16
	Timeout time.Duration // 0 for a deletion
}

// ErrUnsupported is returned for a plan a backend cannot render (the fast
// path on iptables).
var ErrUnsupported = errors.New("not supported by this backend")

// Tag names a rule in the kernel so that Check can find it again, however
// the kernel prints it back: "knockwall <chain> <index> <hash>", where the
// hash covers everything the rule says. Both renderers of a backend (the
// live one and the printed script) carry the same tag.
func Tag(chain string, i int, r *Rule) string {
	h := fnv.New32a()
	rv := *r
	rv.Mark = nil // a pointer: hash what it points to
	fmt.Fprintf(h, "%s/%d/%+v", chain, i, rv)
	if r.Mark != nil {
		fmt.Fprintf(h, "/mark %+v", *r.Mark)
	}
	return fmt.Sprintf("%s %s %d %08x", Owner, chain, i, h.Sum32())
}

// JumpTag names an iptables jump into chain the same way.
func JumpTag(c *Chain, variant int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "jump/%s/%d/%v/%v/%v/%d", c.Name, c.Hook, c.SkipLoopback, c.SYNOnly, c.Priority, variant)
	return fmt.Sprintf("%s %s jump %08x", Owner, c.Name, h.Sum32())
}

// Owner marks what knockwall owns: the nftables table's name, and the
// first word of every comment knockwall puts on a rule.
const Owner = "knockwall"
