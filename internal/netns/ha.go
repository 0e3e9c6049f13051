package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Addresses of an HA topology: a client and two routers (A and B) on one
// Ethernet segment, a bridge in a switch namespace. The routers share a
// virtual address (VIP) that the test moves from one to the other as
// keepalived would; each keeps its own address for the cluster's traffic.
const (
	HAClient4 = "10.90.0.100"
	HANodeA4  = "10.90.0.1"
	HANodeB4  = "10.90.0.2"
	HAVIP4    = "10.90.0.10"
	haBits    = 24
)

// HA is four namespaces: a client, a switch (a bridge) and routers A and B.
type HA struct {
	ID                 string
	Client, Switch     NS
	A, B               NS
	ClientIf, AIf, BIf string // the veth ends inside Client, A and B
	// SwClientIf, SwAIf and SwBIf are the switch's ports, in Switch.
	SwClientIf, SwAIf, SwBIf string
	Bridge                   string
	Client4, A4, B4, VIP     netip.Addr
}

// NewHA creates the topology with the VIP on A. The caller must Close it.
func NewHA(ctx context.Context, prefix string) (*HA, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	id, prefix, err := newID(prefix)
	if err != nil {
		return nil, err
	}
	h := &HA{ID: id, Client: NS(id + "-cl"), Switch: NS(id + "-sw"), A: NS(id + "-a"), B: NS(id + "-b"),
		ClientIf: id + "-c", AIf: id + "-a", BIf: id + "-b", SwClientIf: id + "-sc", SwAIf: id + "-sa", SwBIf: id + "-sb",
		Bridge: id + "-br", Client4: netip.MustParseAddr(HAClient4), A4: netip.MustParseAddr(HANodeA4),
		B4: netip.MustParseAddr(HANodeB4), VIP: netip.MustParseAddr(HAVIP4)}
	if len(h.SwClientIf) > maxIfName {
		return nil, fmt.Errorf("netns: prefix %q too long for interface names", prefix)
	}
	if err := h.setup(ctx); err != nil {
		return nil, errors.Join(err, h.Close())
	}
	return h, nil
}

func (h *HA) setup(ctx context.Context) error {
	sw := string(h.Switch)
	for _, n := range []NS{h.Client, h.Switch, h.A, h.B} {
		if err := ip(ctx, "netns", "add", string(n)); err != nil {
			return err
		}
		if err := ip(ctx, "-n", string(n), "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	steps := [][]string{{"-n", sw, "link", "add", h.Bridge, "type", "bridge"}, {"-n", sw, "link", "set", h.Bridge, "up"}}
	for _, p := range []struct {
		ns          NS
		inner, port string
		addr        string
	}{{h.Client, h.ClientIf, h.SwClientIf, HAClient4}, {h.A, h.AIf, h.SwAIf, HANodeA4}, {h.B, h.BIf, h.SwBIf, HANodeB4}} {
		steps = append(steps,
			[]string{"link", "add", p.inner, "netns", string(p.ns), "type", "veth", "peer", "name", p.port, "netns", sw},
			[]string{"-n", sw, "link", "set", p.port, "master", h.Bridge},
			[]string{"-n", sw, "link", "set", p.port, "up"},
			[]string{"-n", string(p.ns), "link", "set", p.inner, "up"},
			[]string{"-n", string(p.ns), "addr", "add", fmt.Sprintf("%s/%d", p.addr, haBits), "dev", p.inner},
		)
	}
	steps = append(steps, []string{"-n", string(h.A), "addr", "add", fmt.Sprintf("%s/%d", HAVIP4, haBits), "dev", h.AIf})
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// MoveVIP moves the VIP to router to (A or B), as keepalived does on a
// failover: off the other router, onto this one, and the client's
// neighbour cache flushed (what a gratuitous ARP achieves), so its next
// packet to the VIP reaches the new holder.
func (h *HA) MoveVIP(ctx context.Context, to NS) error {
	from, fromIf, toIf := h.A, h.AIf, h.BIf
	if to == h.A {
		from, fromIf, toIf = h.B, h.BIf, h.AIf
	}
	vip := fmt.Sprintf("%s/%d", HAVIP4, haBits)
	if err := ip(ctx, "-n", string(from), "addr", "del", vip, "dev", fromIf); err != nil {
		return err
	}
	if err := ip(ctx, "-n", string(to), "addr", "add", vip, "dev", toIf); err != nil {
		return err
	}
	return ip(ctx, "-n", string(h.Client), "neigh", "flush", "dev", h.ClientIf)
}

// SetLink takes router node's (A or B) switch port down or up: a
// partition of that router from the segment, and its healing.
func (h *HA) SetLink(ctx context.Context, node NS, up bool) error {
	port := h.SwAIf
	if node == h.B {
		port = h.SwBIf
	}
	state := "down"
	if up {
		state = "up"
	}
	return ip(ctx, "-n", string(h.Switch), "link", "set", port, state)
}

// Close deletes the namespaces. It may be called more than once.
func (h *HA) Close() error {
	var errs []error
	for _, n := range []NS{h.Client, h.A, h.B, h.Switch} {
		errs = append(errs, n.Delete())
	}
	return errors.Join(errs...)
}
