package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Addresses of a Router topology: a WAN side (a client, which also plays
// an internet server) and a LAN side (a host behind the router), each on
// its own veth pair with the router. The LAN prefixes are routed from the
// WAN side through the router (fd00:89::/64 like a delegated IPv6 prefix,
// 10.89.0.0/24 like a routed IPv4 subnet). NAT is the caller's to add
// (e2e/router_test.go adds a DNAT port forward and masquerading).
const (
	RouterWAN4  = "10.88.0.1"
	WANClient4  = "10.88.0.2"
	WANClient24 = "10.88.0.3"
	RouterWAN6  = "fd00:88::1"
	WANClient6  = "fd00:88::2"
	WANClient26 = "fd00:88::3"
	RouterLAN4  = "10.89.0.1"
	LANHost4    = "10.89.0.10"
	RouterLAN6  = "fd00:89::1"
	LANHost6    = "fd00:89::10"
	LANPrefix4  = "10.89.0.0/24"
	LANPrefix6  = "fd00:89::/64"
	// A second WAN link (RouterOptions.SecondWAN), like an LTE uplink or
	// a PPPoE session beside the first: its own client namespace.
	RouterWAN24 = "10.87.0.1"
	WAN2Client4 = "10.87.0.2"
	RouterWAN26 = "fd00:87::1"
	WAN2Client6 = "fd00:87::2"
)

// Router is three namespaces: WAN client, router and LAN host; four with
// a second WAN.
type Router struct {
	ID          string
	WAN, Rtr    NS
	LAN         NS
	WAN2        NS     // "" without RouterOptions.SecondWAN
	WAN2If      string // the second WAN client's veth end
	RtrWAN2If   string // the router's second WAN interface
	WANIf       string // the client's veth end
	RtrWANIf    string // the router's WAN interface
	RtrLANIf    string // the router's LAN interface
	LANIf       string // the LAN host's veth end
	RouterWAN4  netip.Addr
	RouterWAN6  netip.Addr
	WANClient4  netip.Addr
	WANClient24 netip.Addr
	WANClient6  netip.Addr
	WANClient26 netip.Addr
	LANHost4    netip.Addr
	LANHost6    netip.Addr
}

// WANPair is the WAN side as a Pair: the router as server, the WAN client
// as client, for helpers that send and capture on a pair.
func (r *Router) WANPair() *Pair {
	return &Pair{ID: r.ID, Server: r.Rtr, Client: r.WAN, ServerIf: r.RtrWANIf, ClientIf: r.WANIf,
		Server4: r.RouterWAN4, Client4: r.WANClient4, Client2v4: r.WANClient24,
		Server6: r.RouterWAN6, Client6: r.WANClient6, Client2v6: r.WANClient26}
}

// RouterOptions shape a Router beyond the three namespaces.
type RouterOptions struct {
	// SecondWAN adds a fourth namespace, a client on a second WAN link
	// of the router (RouterWAN24 / WAN2Client4, RouterWAN26 / WAN2Client6).
	SecondWAN bool
}

// NewRouter creates the topology, forwarding on in the router. The caller
// must Close it.
func NewRouter(ctx context.Context, prefix string, opts ...RouterOptions) (*Router, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	id, prefix, err := newID(prefix)
	if err != nil {
		return nil, err
	}
	r := &Router{ID: id, WAN: NS(id + "-wan"), Rtr: NS(id + "-rtr"), LAN: NS(id + "-lan"),
		WANIf: id + "-w", RtrWANIf: id + "-rw", RtrLANIf: id + "-rl", LANIf: id + "-l",
		RouterWAN4: netip.MustParseAddr(RouterWAN4), RouterWAN6: netip.MustParseAddr(RouterWAN6),
		WANClient4: netip.MustParseAddr(WANClient4), WANClient24: netip.MustParseAddr(WANClient24),
		WANClient6: netip.MustParseAddr(WANClient6), WANClient26: netip.MustParseAddr(WANClient26),
		LANHost4: netip.MustParseAddr(LANHost4), LANHost6: netip.MustParseAddr(LANHost6)}
	if len(r.RtrWANIf) > maxIfName {
		return nil, fmt.Errorf("netns: prefix %q too long for interface names", prefix)
	}
	if err := r.setup(ctx); err != nil {
		return nil, errors.Join(err, r.Close())
	}
	for _, o := range opts {
		if o.SecondWAN && r.WAN2 == "" {
			r.WAN2, r.WAN2If, r.RtrWAN2If = NS(id+"-wn2"), id+"-x", id+"-rx"
			if err := r.setupWAN2(ctx); err != nil {
				return nil, errors.Join(err, r.Close())
			}
		}
	}
	return r, nil
}

// setupWAN2 adds the second WAN client and its link to the router.
func (r *Router) setupWAN2(ctx context.Context) error {
	w, rt := string(r.WAN2), string(r.Rtr)
	if err := ip(ctx, "netns", "add", w); err != nil {
		return err
	}
	for _, kv := range []string{"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"} {
		if _, err := r.WAN2.Run(ctx, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"link", "add", r.WAN2If, "netns", w, "type", "veth", "peer", "name", r.RtrWAN2If, "netns", rt},
		{"-n", w, "link", "set", "lo", "up"},
		{"-n", w, "link", "set", r.WAN2If, "up"},
		{"-n", rt, "link", "set", r.RtrWAN2If, "up"},
		{"-n", w, "addr", "add", WAN2Client4 + "/24", "dev", r.WAN2If},
		{"-n", w, "addr", "add", WAN2Client6 + "/64", "dev", r.WAN2If, "nodad"},
		{"-n", rt, "addr", "add", RouterWAN24 + "/24", "dev", r.RtrWAN2If},
		{"-n", rt, "addr", "add", RouterWAN26 + "/64", "dev", r.RtrWAN2If, "nodad"},
		{"-n", w, "route", "add", LANPrefix4, "via", RouterWAN24},
		{"-n", w, "-6", "route", "add", LANPrefix6, "via", RouterWAN26},
	} {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	if err := waitJoined(ctx, r.WAN2, r.WAN2If, []netip.Addr{netip.MustParseAddr(WAN2Client6)}); err != nil {
		return err
	}
	return waitJoined(ctx, r.Rtr, r.RtrWAN2If, []netip.Addr{netip.MustParseAddr(RouterWAN26)})
}

func (r *Router) setup(ctx context.Context) error {
	w, rt, l := string(r.WAN), string(r.Rtr), string(r.LAN)
	for _, n := range []string{w, rt, l} {
		if err := ip(ctx, "netns", "add", n); err != nil {
			return err
		}
		// No duplicate address detection: link-local addresses would be
		// tentative for a second, and neighbour discovery, which routing
		// needs, slow until then.
		for _, kv := range []string{"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"} {
			if _, err := NS(n).Run(ctx, "sysctl", "-qw", kv); err != nil {
				return err
			}
		}
	}
	steps := [][]string{
		{"link", "add", r.WANIf, "netns", w, "type", "veth", "peer", "name", r.RtrWANIf, "netns", rt},
		{"link", "add", r.LANIf, "netns", l, "type", "veth", "peer", "name", r.RtrLANIf, "netns", rt},
	}
	for _, n := range []string{w, rt, l} {
		steps = append(steps, []string{"-n", n, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"-n", w, "link", "set", r.WANIf, "up"},
		[]string{"-n", rt, "link", "set", r.RtrWANIf, "up"},
		[]string{"-n", rt, "link", "set", r.RtrLANIf, "up"},
		[]string{"-n", l, "link", "set", r.LANIf, "up"},
		[]string{"-n", w, "addr", "add", WANClient4 + "/24", "dev", r.WANIf},
		[]string{"-n", w, "addr", "add", WANClient24 + "/24", "dev", r.WANIf},
		[]string{"-n", w, "addr", "add", WANClient6 + "/64", "dev", r.WANIf, "nodad"},
		[]string{"-n", w, "addr", "add", WANClient26 + "/64", "dev", r.WANIf, "nodad", "preferred_lft", "0"},
		[]string{"-n", rt, "addr", "add", RouterWAN4 + "/24", "dev", r.RtrWANIf},
		[]string{"-n", rt, "addr", "add", RouterWAN6 + "/64", "dev", r.RtrWANIf, "nodad"},
		[]string{"-n", rt, "addr", "add", RouterLAN4 + "/24", "dev", r.RtrLANIf},
		[]string{"-n", rt, "addr", "add", RouterLAN6 + "/64", "dev", r.RtrLANIf, "nodad"},
		[]string{"-n", l, "addr", "add", LANHost4 + "/24", "dev", r.LANIf},
		[]string{"-n", l, "addr", "add", LANHost6 + "/64", "dev", r.LANIf, "nodad"},
		// The LAN prefixes are reached through the router.
		[]string{"-n", w, "route", "add", LANPrefix4, "via", RouterWAN4},
		[]string{"-n", w, "-6", "route", "add", LANPrefix6, "via", RouterWAN6},
		[]string{"-n", l, "route", "add", "default", "via", RouterLAN4},
		[]string{"-n", l, "-6", "route", "add", "default", "via", RouterLAN6},
	)
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if _, err := r.Rtr.Run(ctx, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	joins := []struct {
		ns    NS
		dev   string
		addrs []netip.Addr
	}{
		{r.WAN, r.WANIf, []netip.Addr{r.WANClient6, r.WANClient26}},
		{r.Rtr, r.RtrWANIf, []netip.Addr{r.RouterWAN6}},
		{r.Rtr, r.RtrLANIf, []netip.Addr{netip.MustParseAddr(RouterLAN6)}},
		{r.LAN, r.LANIf, []netip.Addr{r.LANHost6}},
	}
	for _, j := range joins {
		if err := waitJoined(ctx, j.ns, j.dev, j.addrs); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes the namespaces. It may be called more than once.
func (r *Router) Close() error {
	var errs []error
	for _, n := range []NS{r.WAN, r.WAN2, r.LAN, r.Rtr} {
		if n != "" {
			errs = append(errs, n.Delete())
		}
	}
	return errors.Join(errs...)
}
