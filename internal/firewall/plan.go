// Package firewall is knockwall's static firewall: a typed plan, built once
// from the compiled rules, and the backends that render it at the kernel
// edge (nftables over netlink, iptables through iptables-restore). It is
// the only place knockwall touches the host firewall.
//
// The plan is static: no rule is added or removed per knock. With the
// nftables backend's fast path, kernel sets cache the engine's decisions
// (grants, sources with knock progress) so that what needs no decision
// never leaves the kernel; the engine stays the authority.
package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/knockwall/knockwall/rules"
)

// Hook is the netfilter hook a chain is attached to.
type Hook uint8

// Hooks.
const (
	HookPrerouting Hook = iota + 1
	HookInput
	HookForward
)

var hookNames = [...]string{"", "prerouting", "input", "forward"}

func (h Hook) String() string {
	if int(h) < len(hookNames) {
		return hookNames[h]
	}
	return "unknown"
}

// Priorities of knockwall's base chains (nftables numbers; the iptables
// backend puts each chain in the table with the same priority).
const (
	// PrioDivert runs right after the host's mangle rules (-150: one
	// more, because the kernel orders chains of equal priority by when
	// they were registered), so a host rule that sets or restores a mark
	// runs before knockwall clears its bits; and before filter (0) and
	// DNAT (-100): the host's filter rules still see every packet
	// knockwall accepts, and a port forward is judged on the port the
	// client used.
	PrioDivert = -149
	// PrioReject runs before the host's filter rules.
	PrioReject = -10
	// PrioGuard is the security hook, after filter.
	PrioGuard = 50
)

// Family restricts a rule to one IP version.
type Family uint8

// Families.
const (
	FamilyAny Family = iota
	FamilyIPv4
	FamilyIPv6
)

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return "any"
}

// Role says what a rule is for. Roles decide what stays when the daemon
// stops (Kept) and what the fast path adds.
type Role uint8

// Roles.
const (
	// RoleMarkClear clears knockwall's mark bits on packets it may judge,
	// so only knockwall's own verdict sets them (a host's CONNMARK
	// restore or another tool's high mark bits cannot open the guard).
	RoleMarkClear Role = iota + 1
	// RoleDivert sends packets to NFQUEUE.
	RoleDivert
	// RoleFastPath answers from kernel sets without user space.
	RoleFastPath
	// RoleReject answers packets knockwall marked for rejection.
	RoleReject
	// RoleGuard drops protected SYNs that knockwall did not accept.
	RoleGuard
)

var roleNames = [...]string{"", "mark-clear", "divert", "fast-path", "reject", "guard"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return "unknown"
}

// Kept reports whether rules of role r stay in place when the daemon stops
// cleanly (firewall.keep_guard): the guard, and the mark clearing without
// which a packet carrying the accept bits would pass it.
func (r Role) Kept() bool { return r == RoleGuard || r == RoleMarkClear }

// PortRange is an inclusive range of ports; Lo == Hi for one port.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Set names. The nftables backend keeps these as named sets of its table;
// the iptables backend renders the constant ones inline and has no dynamic
// ones (no fast path).
const (
	SetProtected = "protected"  // protected TCP ports (inet_service)
	SetKnockTCP  = "knock_tcp"  // TCP knock ports and rotating ranges (interval)
	SetKnockUDP  = "knock_udp"  // UDP knock and SPA ports
	SetGrants4   = "grants4"    // ipv4_addr . inet_service, per-element timeout
	SetGrants6   = "grants6"    // ipv6_addr . inet_service, per-element timeout
	SetProgress4 = "progress4"  // ipv4_addr, filled by the data plane
	SetProgress6 = "progress6"  // ipv6_addr, filled by the data plane
	SetDegraded  = "degraded"   // nf_proto: a progress set was full
	SetFwdPorts  = "fwd_ports"  // original destination ports of port-forwarded services
	SetHosts4    = "fwd_hosts4" // ipv4_addr . inet_service (interval): routed hosts' protected ports
	SetHosts6    = "fwd_hosts6" // ipv6_addr . inet_service (interval)
	SetRouted4   = "routed4"    // ipv4_addr (interval): prefixes of routed hosts
	SetRouted6   = "routed6"    // ipv6_addr (interval)
	SetTrusted   = "trusted"    // ifname: the interfaces diversion and guard leave alone
)

// SetKind is the key type of a set.
type SetKind uint8

// Set kinds.
const (
	KindPorts       SetKind = iota + 1 // inet_service
	KindAddrPort4                      // ipv4_addr . inet_service
	KindAddrPort6                      // ipv6_addr . inet_service
	KindAddr4                          // ipv4_addr
	KindAddr6                          // ipv6_addr
	KindNfproto                        // nf_proto
	KindPrefixPort4                    // ipv4_addr (prefix) . inet_service, interval
	KindPrefixPort6                    // ipv6_addr (prefix) . inet_service, interval
	KindPrefix4                        // ipv4_addr (prefix), interval
	KindPrefix6                        // ipv6_addr (prefix), interval
	KindIfnames                        // ifname
)

// Set is a named set of the plan.
type Set struct {
	Name string
	Kind SetKind
	// Ports is the content of a constant port set, HostPorts that of a
	// prefix . port set.
	Ports     []PortRange
	HostPorts []HostPort
	Prefixes  []netip.Prefix // KindPrefix4/6
	Ifnames   []string       // KindIfnames
	// Dynamic sets are written by the data plane (progress, degraded) or
	// by the daemon (grants); Apply keeps their elements.
	Dynamic bool
	// Size bounds a dynamic set.
	Size uint32
}

// HostPort is a routed destination prefix and a protected port on it.
type HostPort struct {
	Prefix netip.Prefix
	Port   uint16
}

// Interval reports whether the set holds ranges.
func (s *Set) Interval() bool {
	switch s.Kind {
	case KindPrefixPort4, KindPrefixPort6, KindPrefix4, KindPrefix6:
		return true
	}
	for _, r := range s.Ports {
		if r.Lo != r.Hi {
			return true
		}
	}
	return false
}

// MarkMatch matches (mark & Mask) == Value, or != when Not.
type MarkMatch struct {
	Value, Mask uint32
	Not         bool
}

// VerdictKind is what a rule does with a packet that matches it.
type VerdictKind uint8

// Verdict kinds.
const (
	VerdictNone          VerdictKind = iota // go on with the next rule
	VerdictAccept                           // end this chain (later hooks still see the packet)
	VerdictDrop                             // discard
	VerdictQueue                            // hand to NFQUEUE (bypass when nobody listens)
	VerdictRejectTCP                        // answer with a TCP reset
	VerdictRejectUnreach                    // answer with ICMP(v6) port unreachable
)

// Verdict is a rule's verdict.
type Verdict struct {
	Kind VerdictKind
	// Queue: the first queue and how many (balanced by CPU).
	QueueNum, QueueCount uint16
}

// Rule is one rule: every match must hold, then the statements run in
// order (mark, set update), then the verdict.
type Rule struct {
	Role   Role
	Family Family

	// Matches. Zero values match everything.
	Proto uint8 // rules.ProtoTCP or rules.ProtoUDP; 0 any
	// SYN: of the TCP flags FIN, SYN, RST and ACK only SYN is set.
	SYN bool
	// DPortSet: the destination port is in this constant port set.
	DPortSet string
	// DstLocal: the destination is one of this host's addresses.
	DstLocal bool
	// DstPortSet: destination . port is in this prefix . port set.
	DstPortSet string
	// SrcSet: the source address is in this set (nftables only).
	SrcSet string
	// SrcDPortSet: source . destination port is in this set (nftables only).
	SrcDPortSet string
	// NfprotoSet: the packet's family is in this set (nftables only).
	NfprotoSet string
	// CtNew: the packet opens a new conntrack flow (conntrack state new),
	// so replies to the host's own traffic never match.
	CtNew bool
	// CtDNAT with CtOrigDPortSet: the connection was port-forwarded
	// (DNAT) from a destination port in this set.
	CtDNAT         bool
	CtOrigDPortSet string
	// Mark matches the packet mark.
	Mark *MarkMatch

	// Statements.
	// ClearMark clears these mark bits, then OrMark sets these.
	ClearMark, OrMark uint32
	// AddSrc adds the source address to this dynamic set with Timeout.
	AddSrc string
	// AddNfproto adds the packet's family to this dynamic set with Timeout.
	AddNfproto string
	Timeout    time.Duration

	Verdict Verdict
}

// Chain is one of knockwall's chains, attached to a hook.
type Chain struct {
	// Name is backend-neutral ("divert"); the iptables backend derives
	// its chain names from it.
	Name     string
	Hook     Hook
	Priority int
	// SkipLoopback: packets arriving on lo (the host talking to itself)
	// skip the chain.
	SkipLoopback bool
	// Trusted: packets arriving on these interfaces skip the chain. Every
	// other interface is covered, one that appears later included.
	Trusted []string
	// SYNOnly: only TCP SYNs enter the chain (iptables puts this on the
	// jump, so other packets cost one rule).
	SYNOnly bool
	// Scope, when set, limits the chain to packets for this host's own
	// addresses or for these routed prefixes (a router's prerouting hook
	// sees traffic for anywhere).
	Scope *Scope
	Rules []Rule
}

// Scope is the destinations a chain handles: this host's own addresses,
// and the prefixes of routed hosts (sets Routed4 and Routed6 hold them).
type Scope struct {
	Prefixes []netip.Prefix
}

// Marks are knockwall's mark bits.
type Marks struct {
	Accept, Reject, Mask uint32
}

// Plan is the static firewall of a rules.Set.
type Plan struct {
	Chains []Chain
	Sets   []Set
	Marks  Marks
	// FastPath: kernel sets answer granted SYNs and keep SYNs that need
	// no decision in the kernel (nftables only).
	FastPath bool
	// Ports of each grant, by service id, for writing grant elements;
	// services with a connection limit are not there.
	GrantPorts map[uint64][]uint16
	// FreshGrants empties the grant sets in the same step as the rules
	// go in: a start does so, since the kernel may still hold grants of
	// a process that is gone; a reload or a repair keeps them.
	FreshGrants bool
}

// Options shape a plan beyond what the rules say.
type Options struct {
	// FastPath builds the kernel fast path (nftables backend only).
	FastPath bool
}

// stepTimeoutMax bounds how long a source stays in a progress set after
// its last knock: the longest step_timeout of any service.
func stepTimeoutMax(s *rules.Set) time.Duration {
	var d time.Duration
	for _, svc := range s.Services {
		d = max(d, svc.StepTimeout)
	}
	return d
}

// hasSequences reports whether any service opens by a knock sequence, fixed
// or rotating: only then can a packet reset progress.
func hasSequences(s *rules.Set) bool {
	for _, svc := range s.Services {
		if len(svc.Sequence) > 0 || svc.Rotate != nil {
			return true
		}
	}
	return false
}

// Chain names.
const (
	ChainDivert    = "divert"
	ChainReject    = "refuse"
	ChainGuard     = "guard"
	ChainRejectFwd = "refuse_fwd"
	ChainGuardFwd  = "guard_fwd"
)

// NewPlan builds the static firewall of s.
func NewPlan(s *rules.Set, o Options) *Plan {
	p := &Plan{
		Marks:      Marks{Accept: uint32(s.Firewall.AcceptMark), Reject: uint32(s.Firewall.RejectMark), Mask: uint32(s.Firewall.MarkMask)},
		FastPath:   o.FastPath,
		GrantPorts: map[uint64][]uint16{},
	}
	for _, svc := range s.Services {
		// A one-shot grant counts its connections in user space, so its
		// SYNs must all reach the engine: it is never mirrored.
		// A routed host's grant is for its own address only, which a
		// (source, port) element cannot say: never mirrored either.
		if svc.Connections == 0 && len(svc.Hosts) == 0 {
			p.GrantPorts[svc.ID] = svc.Ports
		}
	}
	protected := ranges(s.ProtectedPorts())
	knockTCP := ranges(s.KnockPorts(rules.ProtoTCP))
	for _, i := range s.Rotating() {
		r := s.Services[i].Rotate
		knockTCP = append(knockTCP, PortRange{r.Lo, r.Hi})
	}
	// fwknop -P tcpraw sends its packet in a SYN to the fwknop port.
	knockTCP = append(knockTCP, ranges(s.FwknopPorts())...)
	slices.SortFunc(knockTCP, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	knockUDP := ranges(s.UDPPorts())

	p.Sets = append(p.Sets, Set{Name: SetProtected, Kind: KindPorts, Ports: protected})
	if len(knockTCP) > 0 {
		p.Sets = append(p.Sets, Set{Name: SetKnockTCP, Kind: KindPorts, Ports: knockTCP})
	}
	if len(knockUDP) > 0 {
		p.Sets = append(p.Sets, Set{Name: SetKnockUDP, Kind: KindPorts, Ports: knockUDP})
	}
	m := p.Marks
	queue := Verdict{Kind: VerdictQueue, QueueNum: uint16(s.Queue.Num), QueueCount: uint16(s.Queue.Count)}

	trusted := trustedIfaces(s.Firewall.TrustedInterfaces)
	if len(trusted) > 0 {
		p.Sets = append(p.Sets, Set{Name: SetTrusted, Kind: KindIfnames, Ifnames: trusted})
	}
	router := s.RouterMode()
	// A router's forwarded ports: port forwards (before DNAT, on this
	// host's addresses) and routed hosts' ports, by family.
	var fwd forwarded
	if router {
		fwd.ports = s.ForwardPorts()
		var hps []HostPort
		for _, rp := range s.RoutedPorts() {
			hps = append(hps, HostPort(rp))
		}
		fwd.hosts4, fwd.hosts6 = splitFamily(hps, func(hp HostPort) netip.Addr { return hp.Prefix.Addr() })
	}
	if len(fwd.ports) > 0 {
		p.Sets = append(p.Sets, Set{Name: SetFwdPorts, Kind: KindPorts, Ports: ranges(fwd.ports)})
	}

	// Divert: clear knockwall's bits, then (fast path) answer what the
	// kernel can, then queue. On a router it runs before routing and DNAT
	// (prerouting), for this host's own addresses and routed hosts.
	divert := Chain{Name: ChainDivert, Hook: HookInput, Priority: PrioDivert, SkipLoopback: true, Trusted: trusted}
	if router {
		divert.Hook = HookPrerouting
		divert.Scope = &Scope{Prefixes: s.RoutedPrefixes()}
		v4, v6 := splitFamily(divert.Scope.Prefixes, netip.Prefix.Addr)
		p.Sets = append(p.Sets, Set{Name: SetRouted4, Kind: KindPrefix4, Prefixes: v4}, Set{Name: SetRouted6, Kind: KindPrefix6, Prefixes: v6})
	}
	divert.Rules = append(divert.Rules, Rule{Role: RoleMarkClear, Proto: rules.ProtoTCP, SYN: true, ClearMark: m.Mask})
	if len(knockUDP) > 0 {
		divert.Rules = append(divert.Rules, Rule{Role: RoleMarkClear, Proto: rules.ProtoUDP, DPortSet: SetKnockUDP, ClearMark: m.Mask})
	}
	// A datagram that is not a source's next knock resets its progress,
	// as a wrong SYN does, so every new UDP flow must reach the engine
	// while anyone may be knocking: without that a UDP sweep completes
	// any sequence whose UDP knocks ascend.
	udpResets := hasSequences(s)
	if !o.FastPath {
		divert.Rules = append(divert.Rules, Rule{Role: RoleDivert, Proto: rules.ProtoTCP, SYN: true, Verdict: queue})
		if len(knockUDP) > 0 {
			divert.Rules = append(divert.Rules, Rule{Role: RoleDivert, Proto: rules.ProtoUDP, DPortSet: SetKnockUDP, Verdict: queue})
		}
		if udpResets {
			// Without kernel sets, nothing says which sources have
			// progress: every new UDP flow is judged.
			divert.Rules = append(divert.Rules, Rule{Role: RoleDivert, Proto: rules.ProtoUDP, CtNew: true, Verdict: queue})
		}
	} else {
		p.addFastPath(s, &divert, queue, len(knockTCP) > 0, len(knockUDP) > 0, router, fwd)
	}

	reject := Chain{Name: ChainReject, Hook: HookInput, Priority: PrioReject}
	rejected := &MarkMatch{Value: m.Reject, Mask: m.Mask}
	reject.Rules = []Rule{
		{Role: RoleReject, Proto: rules.ProtoTCP, Mark: rejected, Verdict: Verdict{Kind: VerdictRejectTCP}},
		{Role: RoleReject, Proto: rules.ProtoUDP, Mark: rejected, Verdict: Verdict{Kind: VerdictRejectUnreach}},
		{Role: RoleReject, Mark: rejected, Verdict: Verdict{Kind: VerdictDrop}},
	}

	notAccepted := &MarkMatch{Value: m.Accept, Mask: m.Mask, Not: true}
	guard := Chain{Name: ChainGuard, Hook: HookInput, Priority: PrioGuard, SkipLoopback: true, SYNOnly: true, Trusted: trusted}
	guard.Rules = []Rule{{Role: RoleGuard, Proto: rules.ProtoTCP, SYN: true, DPortSet: SetProtected,
		Mark: notAccepted, Verdict: Verdict{Kind: VerdictDrop}}}
	if len(fwd.ports) > 0 {
		// A port forward's port on this host's own input: a forwarder in
		// user space (socat, rinetd) takes the SYN here, where the
		// forward guard's conntrack DNAT test never sees it.
		guard.Rules = append(guard.Rules, Rule{Role: RoleGuard, Proto: rules.ProtoTCP, SYN: true, DPortSet: SetFwdPorts,
			Mark: notAccepted, Verdict: Verdict{Kind: VerdictDrop}})
	}

	// Guard first: a backend that applies chains in order never diverts
	// a protected port it does not guard yet.
	p.Chains = []Chain{guard}
	if router {
		// The forward path: a new connection port-forwarded from a
		// protected port, or to a routed host's protected port, that
		// knockwall did not accept is dropped, after the host's own
		// filter rules; rejects are answered before them.
		gf := Chain{Name: ChainGuardFwd, Hook: HookForward, Priority: PrioGuard, SYNOnly: true, Trusted: trusted}
		if len(fwd.ports) > 0 {
			gf.Rules = append(gf.Rules, Rule{Role: RoleGuard, Proto: rules.ProtoTCP, SYN: true, CtDNAT: true, CtOrigDPortSet: SetFwdPorts,
				Mark: notAccepted, Verdict: Verdict{Kind: VerdictDrop}})
		}
		for _, h := range []struct {
			f    Family
			name string
			kind SetKind
			hp   []HostPort
		}{{FamilyIPv4, SetHosts4, KindPrefixPort4, fwd.hosts4}, {FamilyIPv6, SetHosts6, KindPrefixPort6, fwd.hosts6}} {
			if len(h.hp) == 0 {
				continue
			}
			p.Sets = append(p.Sets, Set{Name: h.name, Kind: h.kind, HostPorts: h.hp})
			gf.Rules = append(gf.Rules, Rule{Role: RoleGuard, Family: h.f, Proto: rules.ProtoTCP, SYN: true, DstPortSet: h.name,
				Mark: notAccepted, Verdict: Verdict{Kind: VerdictDrop}})
		}
		rf := reject
		rf.Name, rf.Hook = ChainRejectFwd, HookForward
		p.Chains = append(p.Chains, gf, rf)
	}
	p.Chains = append(p.Chains, reject, divert)
	return p
}

// addFastPath fills the divert chain for the kernel fast path: granted SYNs
// are accepted (with the accept mark) in the kernel; knocks put their
// source in a progress set and go to user space; SYNs from sources with
// progress and SYNs to protected ports go to user space; every other SYN
// stays in the kernel.
func (p *Plan) addFastPath(s *rules.Set, c *Chain, queue Verdict, tcpKnocks, udpKnocks, router bool, fwd forwarded) {
	m := p.Marks
	size := uint32(max(s.Tracker.MaxPending, 1024))
	// Grant sets hold what the daemon writes, bounded by max_grants
	// times the ports of a service; they get no size of their own, so a
	// reload that changes ports keeps them.
	p.Sets = append(p.Sets,
		Set{Name: SetGrants4, Kind: KindAddrPort4, Dynamic: true},
		Set{Name: SetGrants6, Kind: KindAddrPort6, Dynamic: true},
		Set{Name: SetProgress4, Kind: KindAddr4, Dynamic: true, Size: size},
		Set{Name: SetProgress6, Kind: KindAddr6, Dynamic: true, Size: size},
		Set{Name: SetDegraded, Kind: KindNfproto, Dynamic: true, Size: 4},
	)
	// A source that knocks is remembered in the kernel before its knock
	// reaches user space, so no SYN of its after that can bypass the
	// engine (which resets progress on a wrong port). If the progress set
	// is full, the add fails and the rule stops there; the next rule then
	// marks the family degraded, and every SYN of that family goes to
	// user space until the knocks stop.
	hold := stepTimeoutMax(s)
	knock := func(proto uint8, set string) {
		syn := proto == rules.ProtoTCP
		for _, pr := range []struct {
			f   Family
			set string
		}{{FamilyIPv4, SetProgress4}, {FamilyIPv6, SetProgress6}} {
			c.Rules = append(c.Rules, Rule{Role: RoleFastPath, Family: pr.f, Proto: proto, SYN: syn, DPortSet: set,
				AddSrc: pr.set, Timeout: hold, Verdict: queue})
		}
		c.Rules = append(c.Rules, Rule{Role: RoleFastPath, Proto: proto, SYN: syn, DPortSet: set,
			AddNfproto: SetDegraded, Timeout: hold, Verdict: queue})
	}
	if tcpKnocks {
		knock(rules.ProtoTCP, SetKnockTCP)
	}
	if udpKnocks {
		knock(rules.ProtoUDP, SetKnockUDP)
	}
	// Granted SYNs are accepted in the kernel, with the accept mark the
	// guard looks for, also right after the knock (while the source is
	// still in a progress set).
	for _, g := range []struct {
		f   Family
		set string
	}{{FamilyIPv4, SetGrants4}, {FamilyIPv6, SetGrants6}} {
		// On a router the divert chain also sees routed hosts' SYNs; a
		// grant element says nothing of the destination, so it answers
		// only SYNs to this host's own addresses (its services and port
		// forwards, the only grants mirrored).
		c.Rules = append(c.Rules, Rule{Role: RoleFastPath, Family: g.f, Proto: rules.ProtoTCP, SYN: true, DstLocal: router, SrcDPortSet: g.set,
			ClearMark: m.Mask, OrMark: m.Accept, Verdict: Verdict{Kind: VerdictAccept}})
	}
	// Sources with progress have every SYN judged, so a wrong port resets
	// their progress as it does without the fast path. (A granted SYN to
	// its granted port, answered above, does not: a source that holds a
	// grant can reset nothing it could not simply knock again.)
	c.Rules = append(c.Rules,
		Rule{Role: RoleDivert, Family: FamilyIPv4, Proto: rules.ProtoTCP, SYN: true, SrcSet: SetProgress4, Verdict: queue},
		Rule{Role: RoleDivert, Family: FamilyIPv6, Proto: rules.ProtoTCP, SYN: true, SrcSet: SetProgress6, Verdict: queue},
		Rule{Role: RoleDivert, Proto: rules.ProtoTCP, SYN: true, NfprotoSet: SetDegraded, Verdict: queue},
	)
	// Likewise their new UDP flows (a datagram that is not their next knock
	// resets their progress); a reply to the host's own traffic is no new
	// flow and stays in the kernel.
	if hasSequences(s) {
		c.Rules = append(c.Rules,
			Rule{Role: RoleDivert, Family: FamilyIPv4, Proto: rules.ProtoUDP, CtNew: true, SrcSet: SetProgress4, Verdict: queue},
			Rule{Role: RoleDivert, Family: FamilyIPv6, Proto: rules.ProtoUDP, CtNew: true, SrcSet: SetProgress6, Verdict: queue},
			Rule{Role: RoleDivert, Proto: rules.ProtoUDP, CtNew: true, NfprotoSet: SetDegraded, Verdict: queue},
		)
	}
	c.Rules = append(c.Rules, Rule{Role: RoleDivert, Proto: rules.ProtoTCP, SYN: true, DPortSet: SetProtected, Verdict: queue})
	// A router's forwarded ports.
	if len(fwd.ports) > 0 {
		c.Rules = append(c.Rules, Rule{Role: RoleDivert, Proto: rules.ProtoTCP, SYN: true, DPortSet: SetFwdPorts, Verdict: queue})
	}
	if len(fwd.hosts4) > 0 {
		c.Rules = append(c.Rules, Rule{Role: RoleDivert, Family: FamilyIPv4, Proto: rules.ProtoTCP, SYN: true, DstPortSet: SetHosts4, Verdict: queue})
	}
	if len(fwd.hosts6) > 0 {
		c.Rules = append(c.Rules, Rule{Role: RoleDivert, Family: FamilyIPv6, Proto: rules.ProtoTCP, SYN: true, DstPortSet: SetHosts6, Verdict: queue})
	}
}

// forwarded are a router's forwarded ports: port forwards' ports, as the
// client uses them, and routed hosts' ports by family.
type forwarded struct {
	ports          []uint16
	hosts4, hosts6 []HostPort
}

// splitFamily splits xs into IPv4 and IPv6 by the address addr gives.
func splitFamily[T any](xs []T, addr func(T) netip.Addr) (v4, v6 []T) {
	for _, x := range xs {
		if addr(x).Is4() {
			v4 = append(v4, x)
		} else {
			v6 = append(v6, x)
		}
	}
	return v4, v6
}

// Stopped is the plan as it stays after a clean stop with the guard kept:
// only the rules whose role is Kept, in the chains that still hold one.
// (Deleting a base chain makes the kernel drop what waits in the queues; on
// a stop the queues are going anyway.)
func (p *Plan) Stopped() *Plan {
	q := *p
	q.Chains = nil
	for _, c := range p.Chains {
		c.Rules = slices.DeleteFunc(slices.Clone(c.Rules), func(r Rule) bool { return !r.Role.Kept() })
		if len(c.Rules) > 0 {
			q.Chains = append(q.Chains, c)
		}
	}
	return &q
}

// Chain returns the chain named name, or nil.
func (p *Plan) Chain(name string) *Chain {
	for i := range p.Chains {
		if p.Chains[i].Name == name {
			return &p.Chains[i]
		}
	}
	return nil
}

// Set returns the set named name, or nil.
func (p *Plan) Set(name string) *Set {
	for i := range p.Sets {
		if p.Sets[i].Name == name {
			return &p.Sets[i]
		}
	}
	return nil
}

// trustedIfaces is names sorted, without repeats and without lo, which
// every chain that needs it skips anyway (SkipLoopback).
func trustedIfaces(names []string) []string {
	out := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "lo" })
	slices.Sort(out)
	return slices.Compact(out)
}

// ranges turns sorted ports into ranges of one port each.
func ranges(ports []uint16) []PortRange {
	out := make([]PortRange, len(ports))
	for i, p := range ports {
		out[i] = PortRange{p, p}
	}
	return out
}
