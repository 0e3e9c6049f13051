package rules

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
)

// ErrInvalid is wrapped by every validation error, so callers can tell a bad
// configuration (exit status 2) from other failures.
var ErrInvalid = errors.New("invalid configuration")

// KeyError is a validation error that names the offending key.
type KeyError struct {
	Key string // e.g. "services.ssh.sequence[2]"
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalid) hold.
func (e *KeyError) Unwrap() error { return ErrInvalid }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Action is what a packet that may not pass gets.
type Action uint8

// Actions.
const (
	ActionReject Action = iota // answer like a closed port
	ActionDrop                 // discard silently
)

func (a Action) String() string {
	if a == ActionDrop {
		return ClosedDrop
	}
	return ClosedReject
}

// Knock is one step of a sequence: a protocol and a destination port.
type Knock struct {
	Proto uint8
	Port  uint16
}

// Key packs a knock into the uint32 the tracker compares.
func (k Knock) Key() uint32 { return KnockKey(k.Proto, k.Port) }

// KnockKey packs a protocol and port the way Knock.Key does.
func KnockKey(proto uint8, port uint16) uint32 { return uint32(proto)<<16 | uint32(port) }

func (k Knock) String() string {
	if k.Proto == ProtoUDP {
		return strconv.Itoa(int(k.Port)) + "/udp"
	}
	return strconv.Itoa(int(k.Port)) + "/tcp"
}

// ParseKnock parses "7000", "7000/tcp" or "9000/udp".
func ParseKnock(s string) (Knock, error) {
	s = strings.TrimSpace(s)
	num, proto, hasProto := strings.Cut(s, "/")
	k := Knock{Proto: ProtoTCP}
	if hasProto {
		switch strings.ToLower(proto) {
		case "tcp":
		case "udp":
			k.Proto = ProtoUDP
		default:
			return Knock{}, fmt.Errorf("%q: protocol must be tcp or udp", s)
		}
	}
	p, err := strconv.Atoi(num)
	if err != nil || p < 1 || p > 65535 || num[0] < '0' || num[0] > '9' {
		return Knock{}, fmt.Errorf("%q: port must be a number from 1 to 65535", s)
	}
	k.Port = uint16(p)
	return k, nil
}

// Service is one compiled service.
type Service struct {
	Name string
	// ID names the service in the tracker's grants. It is derived from the
	// name, so a grant stays with its service across a reload that adds or
	// removes other services.
	ID          uint64
	Ports       []uint16
	Sequence    []Knock // may be empty when SPA or Rotate opens the service
	StepTimeout time.Duration
	OpenFor     time.Duration
	Closed      Action
	// Connections is how many new connections a grant lets in (0: any).
	Connections int
	// PlainGrants bounds the live grants from the plain Sequence (never
	// from SPA, fwknop, Rotate or an operator); FirstConnectWithin ends
	// such a grant early if its source opens no connection within it.
	// Both are 0 without a Sequence.
	PlainGrants        int
	FirstConnectWithin time.Duration
	// Forward: the service protects forwarded connections. With Hosts,
	// routed destinations in these prefixes and their Ports; without,
	// port forwards (DNAT) from Ports on this host's own addresses.
	Forward bool
	Hosts   []netip.Prefix
	SPA     *SPA    // nil: no single-packet authorization
	Fwknop  *Fwknop // nil: no fwknop packets
	Rotate  *Rotate // nil: no rotating sequence
}

// SPA is a service's compiled single-packet authorization.
type SPA struct {
	Port    uint16 // UDP; 0 = tokens only in SYNs to the protected ports
	Keys    []*spa.Key
	MaxSkew time.Duration
	// RequireSource refuses tokens that are not bound to a source.
	RequireSource bool
}

// Key returns the key with id, or nil.
func (a *SPA) Key(id uint16) *spa.Key {
	for _, k := range a.Keys {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// Fwknop is a service's compiled fwknop SPA.
type Fwknop struct {
	Port   uint16 // UDP and TCP
	Key    *fwknop.Key
	MaxAge time.Duration
	// RequireSource refuses packets with allow-IP 0.0.0.0.
	RequireSource bool
}

// Rotate is a service's compiled rotating sequence.
type Rotate struct {
	Key    *spa.Key
	Length int
	Period time.Duration
	Lo, Hi uint16
}

// Sequence derives the knock ports for period index idx.
func (r *Rotate) Sequence(service string, idx int64) []uint16 {
	return spa.RotatingSequence(r.Key, service, idx, r.Length, r.Lo, r.Hi, nil)
}

// Option tunes Compile.
type Option func(*compileOpts)

type compileOpts struct {
	readKey    func(path string) (*spa.Key, error)
	readFwknop func(path string) (*fwknop.Key, error)
}

// WithFwknopKeyReader lets Compile load fwknop keys (fwknop.ReadKeyFile in
// the daemon). Without it, a configuration that names one fails.
func WithFwknopKeyReader(f func(path string) (*fwknop.Key, error)) Option {
	return func(o *compileOpts) { o.readFwknop = f }
}

// WithKeyReader lets Compile load SPA and rotation keys (spa.ReadKeyFile in
// the daemon). Without it, a configuration that names a key file fails.
func WithKeyReader(f func(path string) (*spa.Key, error)) Option {
	return func(o *compileOpts) { o.readKey = f }
}

// Set is a compiled, immutable configuration. The per-packet path reads it
// without locks; a reload builds a new Set and swaps a pointer.
type Set struct {
	Queue    QueueConfig
	Firewall FirewallConfig
	Log      LogConfig
	Tracker  TrackerConfig
	Services []Service // sorted by name; a service's index is its id
	Control  ControlConfig
	Metrics  MetricsConfig
	State    StateConfig
	Cluster  ClusterConfig

	// protected is a bitmap of protected TCP ports, so that the common case,
	// a SYN to an unprotected port, costs one load.
	protected [65536 / 64]uint64
	// knockPorts is the same for knock ports, per protocol (0 tcp, 1 udp).
	knockPorts [2][65536 / 64]uint64
	// cover maps a protected port to the mask of services that protect it,
	// coverIDs to their ids.
	cover    map[uint16]uint64
	coverIDs map[uint16][]uint64
	// knockSvc maps a knock key to the one service whose sequence uses it.
	knockSvc map[uint32]int
	// begins maps a first knock to its service.
	begins map[uint32]int
	// spaPorts maps a UDP SPA port to its service.
	spaPorts map[uint16]int
	// fwknopPorts maps an fwknop port (UDP and TCP) to its service.
	fwknopPorts map[uint16]int
	// rotating lists the services with a rotating sequence.
	rotating []int
	// routed lists the services that protect routed hosts.
	routed []int
}

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// ifName is what an interface name in firewall.trusted_interfaces may be: what
// Linux allows and iptables and nft take as a plain name.
var ifName = regexp.MustCompile(`^[A-Za-z0-9._@:-]{1,15}$`)

// badInterface returns the index of the first name in names that is not
// an interface name, or -1.
func badInterface(names []string) int {
	for i, n := range names {
		if !ifName.MatchString(n) {
			return i
		}
	}
	return -1
}

var logLevels = []string{"debug", "info", "warn", "error"}

// Compile validates c and builds a Set. The first problem found is returned as
// a *KeyError wrapping ErrInvalid.
func Compile(c Config, opts ...Option) (*Set, error) {
	var o compileOpts
	for _, opt := range opts {
		opt(&o)
	}
	s := &Set{Queue: c.Queue, Firewall: c.Firewall, Log: c.Log, Tracker: c.Tracker}
	if err := validateGlobal(c); err != nil {
		return nil, err
	}
	if err := validateOperate(c); err != nil {
		return nil, err
	}
	s.Control, s.Metrics, s.State = c.Control, c.Metrics, c.State
	if err := validateCluster(c.Cluster); err != nil {
		return nil, err
	}
	s.Cluster = c.Cluster
	s.Cluster.Peers = slices.Clone(c.Cluster.Peers)
	if len(c.Services) == 0 {
		return nil, keyErr("services", "at least one service is required")
	}
	if len(c.Services) > MaxServices {
		return nil, keyErr("services", "at most %d services are supported, got %d", MaxServices, len(c.Services))
	}
	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	slices.Sort(names)

	s.cover = make(map[uint16]uint64)
	s.coverIDs = make(map[uint16][]uint64)
	s.knockSvc = make(map[uint32]int)
	s.begins = make(map[uint32]int)
	s.spaPorts = make(map[uint16]int)
	s.fwknopPorts = make(map[uint16]int)
	knockOwner := make(map[uint32]string)
	for i, name := range names {
		svc, err := compileService(name, c.Services[name], o)
		if err != nil {
			return nil, err
		}
		if svc.Rotate != nil {
			s.rotating = append(s.rotating, i)
		}
		if len(svc.Hosts) > 0 {
			// Ports of routed hosts: judged by destination (RoutedCover),
			// never on this host's own addresses.
			s.routed = append(s.routed, i)
		} else {
			for _, p := range svc.Ports {
				s.cover[p] |= 1 << uint(i)
				s.coverIDs[p] = append(s.coverIDs[p], svc.ID)
				s.protected[p/64] |= 1 << (p % 64)
			}
		}
		for j, k := range svc.Sequence {
			key := fmt.Sprintf("services.%s.sequence[%d]", name, j)
			if owner, ok := knockOwner[k.Key()]; ok && owner != name {
				return nil, keyErr(key, "knock %s is already used by service %q", k, owner)
			}
			knockOwner[k.Key()] = name
			s.knockSvc[k.Key()] = i
			s.knockPorts[protoIndex(k.Proto)][k.Port/64] |= 1 << (k.Port % 64)
		}
		if len(svc.Sequence) > 0 {
			s.begins[svc.Sequence[0].Key()] = i
		}
		s.Services = append(s.Services, svc)
	}
	// An SPA port is a UDP port of its own: no knock, no other SPA port.
	for i, svc := range s.Services {
		if svc.SPA == nil || svc.SPA.Port == 0 {
			continue
		}
		key := "services." + names[i] + ".spa.port"
		if owner, ok := knockOwner[KnockKey(ProtoUDP, svc.SPA.Port)]; ok {
			return nil, keyErr(key, "UDP port %d is already a knock port of service %q", svc.SPA.Port, owner)
		}
		if j, ok := s.spaPorts[svc.SPA.Port]; ok {
			return nil, keyErr(key, "UDP port %d is already the SPA port of service %q", svc.SPA.Port, names[j])
		}
		s.spaPorts[svc.SPA.Port] = i
	}
	// An fwknop port takes UDP and TCP packets of its own: no knock, SPA
	// port, protected port, or other service's fwknop port.
	for i, svc := range s.Services {
		if svc.Fwknop == nil {
			continue
		}
		port := svc.Fwknop.Port
		key := "services." + names[i] + ".fwknop.port"
		for _, proto := range []uint8{ProtoUDP, ProtoTCP} {
			if owner, ok := knockOwner[KnockKey(proto, port)]; ok {
				return nil, keyErr(key, "port %d is already a knock port of service %q", port, owner)
			}
		}
		if j, ok := s.spaPorts[port]; ok {
			return nil, keyErr(key, "UDP port %d is already the SPA port of service %q", port, names[j])
		}
		if j, ok := s.fwknopPorts[port]; ok {
			return nil, keyErr(key, "port %d is already the fwknop port of service %q", port, names[j])
		}
		if s.IsProtected(port) {
			return nil, keyErr(key, "port %d is a protected port", port)
		}
		s.fwknopPorts[port] = i
	}
	// A rotating range is reserved for knocking: it must not hold a
	// protected port, a fixed TCP knock, or another service's range.
	for _, i := range s.rotating {
		r := s.Services[i].Rotate
		key := "services." + names[i] + ".rotate.range"
		for p := int(r.Lo); p <= int(r.Hi); p++ {
			if s.IsProtected(uint16(p)) {
				return nil, keyErr(key, "range %d-%d holds protected port %d", r.Lo, r.Hi, p)
			}
			if owner, ok := knockOwner[KnockKey(ProtoTCP, uint16(p))]; ok {
				return nil, keyErr(key, "range %d-%d holds port %d, a knock of service %q", r.Lo, r.Hi, p, owner)
			}
			if j, ok := s.fwknopPorts[uint16(p)]; ok {
				return nil, keyErr(key, "range %d-%d holds port %d, the fwknop port of service %q", r.Lo, r.Hi, p, names[j])
			}
		}
		for _, j := range s.rotating {
			if o := s.Services[j].Rotate; j != i && r.Lo <= o.Hi && o.Lo <= r.Hi {
				return nil, keyErr(key, "range %d-%d overlaps the range of service %q", r.Lo, r.Hi, names[j])
			}
		}
	}
	// A knock must never land on a protected port: the knock would then
	// either be swallowed or open what it is meant to guard.
	for i, svc := range s.Services {
		for j, k := range svc.Sequence {
			if k.Proto == ProtoTCP && s.IsProtected(k.Port) {
				return nil, keyErr(fmt.Sprintf("services.%s.sequence[%d]", names[i], j),
					"knock port %d is a protected port", k.Port)
			}
		}
	}
	// A port on this host's own addresses is either this host's service
	// or a port forward's, never both: the one guard would be on the
	// input path, the other on the forward path.
	for port, mask := range s.cover {
		local, fwd := -1, -1
		for i := range s.Services {
			if mask&(1<<uint(i)) == 0 {
				continue
			}
			if s.Services[i].Forward {
				fwd = i
			} else {
				local = i
			}
		}
		if local >= 0 && fwd >= 0 {
			return nil, keyErr("services."+s.Services[fwd].Name+".ports",
				"port %d is also protected by service %q on this host itself; a port is either this host's or a port forward's", port, s.Services[local].Name)
		}
	}
	// Services that share a protected port must answer strangers alike, or
	// the answer would depend on which service is looked at first.
	for port, mask := range s.cover {
		var first = -1
		for i := range s.Services {
			if mask&(1<<uint(i)) == 0 {
				continue
			}
			if first < 0 {
				first = i
				continue
			}
			if s.Services[i].Closed != s.Services[first].Closed {
				return nil, keyErr("services."+s.Services[i].Name+".closed",
					"port %d is also protected by service %q with closed: %s; services sharing a port must use the same closed action",
					port, s.Services[first].Name, s.Services[first].Closed)
			}
		}
	}
	if err := s.sizePlainRooms(); err != nil {
		return nil, err
	}
	return s, nil
}

// sizePlainRooms gives each service with a plain sequence its room in the
// grant table: plain_grants, or an even share of half of max_grants. What
// all of them may hold together must leave room for the grants a spoofer
// cannot make (SPA, fwknop, rotating sequences, operators).
func (s *Set) sizePlainRooms() error {
	var plain, set, fixed int
	for _, svc := range s.Services {
		if len(svc.Sequence) == 0 {
			continue
		}
		plain++
		if svc.PlainGrants > 0 {
			set++
			fixed += svc.PlainGrants
		}
	}
	if plain == 0 {
		return nil
	}
	share := 0
	if plain > set {
		share = max((s.Tracker.MaxGrants/2-fixed)/(plain-set), 1)
	}
	total := 0
	for i := range s.Services {
		svc := &s.Services[i]
		if len(svc.Sequence) == 0 {
			continue
		}
		if svc.PlainGrants == 0 {
			svc.PlainGrants = share
		}
		total += svc.PlainGrants
	}
	if total >= s.Tracker.MaxGrants {
		return keyErr("tracker.max_grants", "%d leaves no room for SPA, fwknop, rotating-sequence and operator grants: the plain sequences' plain_grants take %d; raise it or lower plain_grants", s.Tracker.MaxGrants, total)
	}
	return nil
}

func validateGlobal(c Config) error {
	switch {
	case c.Queue.Num < 0 || c.Queue.Num > 65535:
		return keyErr("queue.num", "must be from 0 to 65535, got %d", c.Queue.Num)
	case c.Queue.Count < 1 || c.Queue.Count > MaxQueues:
		return keyErr("queue.count", "must be from 1 to %d, got %d", MaxQueues, c.Queue.Count)
	case c.Queue.Num+c.Queue.Count-1 > 65535:
		return keyErr("queue.count", "queues %d..%d run past 65535", c.Queue.Num, c.Queue.Num+c.Queue.Count-1)
	case c.Queue.MaxLen < 1:
		return keyErr("queue.max_len", "must be at least 1, got %d", c.Queue.MaxLen)
	case !slices.Contains(logLevels, c.Log.Level):
		return keyErr("log.level", "must be one of %s, got %q", strings.Join(logLevels, ", "), c.Log.Level)
	case c.Log.Format != "text" && c.Log.Format != "json":
		return keyErr("log.format", "must be text or json, got %q", c.Log.Format)
	case c.Tracker.MaxPending < 1:
		return keyErr("tracker.max_pending", "must be at least 1, got %d", c.Tracker.MaxPending)
	case c.Tracker.MaxGrants < 1:
		return keyErr("tracker.max_grants", "must be at least 1, got %d", c.Tracker.MaxGrants)
	case c.Tracker.MaxNonces < 1:
		return keyErr("tracker.max_nonces", "must be at least 1, got %d", c.Tracker.MaxNonces)
	case c.Tracker.KnockRate < 0:
		return keyErr("tracker.knock_rate", "must be 0 (no limit) or positive, got %g", c.Tracker.KnockRate)
	case c.Tracker.KnockRate > 0 && c.Tracker.KnockBurst < 1:
		return keyErr("tracker.knock_burst", "must be at least 1 when tracker.knock_rate is set, got %d", c.Tracker.KnockBurst)
	case len(c.Firewall.Interfaces) > 0:
		return keyErr("firewall.interfaces", "is replaced by firewall.trusted_interfaces: list the interfaces knockwall leaves alone (a router's LAN, for example [br-lan]); every other interface, one that appears later included, is protected")
	case badInterface(c.Firewall.TrustedInterfaces) >= 0:
		i := badInterface(c.Firewall.TrustedInterfaces)
		return keyErr(fmt.Sprintf("firewall.trusted_interfaces[%d]", i), "%q is not an interface name (1 to 15 of A-Z a-z 0-9 . _ - @ :)", c.Firewall.TrustedInterfaces[i])
	case c.Firewall.Backend != BackendAuto && c.Firewall.Backend != BackendNftables && c.Firewall.Backend != BackendIptables:
		return keyErr("firewall.backend", "must be auto, nftables or iptables, got %q", c.Firewall.Backend)
	case c.Firewall.MarkMask <= 0 || c.Firewall.MarkMask > 0xffffffff:
		return keyErr("firewall.mark_mask", "must be a non-zero 32-bit mask")
	case c.Firewall.AcceptMark <= 0 || c.Firewall.AcceptMark&^c.Firewall.MarkMask != 0:
		return keyErr("firewall.accept_mark", "must be non-zero and inside firewall.mark_mask")
	case c.Firewall.RejectMark <= 0 || c.Firewall.RejectMark&^c.Firewall.MarkMask != 0:
		return keyErr("firewall.reject_mark", "must be non-zero and inside firewall.mark_mask")
	case c.Firewall.AcceptMark == c.Firewall.RejectMark:
		return keyErr("firewall.reject_mark", "must differ from firewall.accept_mark")
	}
	return nil
}

func compileService(name string, c ServiceConfig, o compileOpts) (Service, error) {
	base := "services." + name
	if !serviceName.MatchString(name) {
		return Service{}, keyErr(base, "service names use lower-case letters, digits and _ and start with a letter")
	}
	svc := Service{Name: name, ID: serviceID(name), StepTimeout: c.StepTimeout, OpenFor: c.OpenFor, Connections: c.Connections, Forward: c.Forward}
	for i, h := range c.Hosts {
		key := fmt.Sprintf("%s.hosts[%d]", base, i)
		pfx, err := netip.ParsePrefix(strings.TrimSpace(h))
		if err != nil {
			if a, aerr := netip.ParseAddr(strings.TrimSpace(h)); aerr == nil {
				pfx = netip.PrefixFrom(a, a.BitLen())
			} else {
				return Service{}, keyErr(key, "%q is not an address prefix (like 2001:db8:10::/64 or 192.0.2.0/24)", h)
			}
		}
		if pfx.Addr().Is4In6() {
			return Service{}, keyErr(key, "%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix", h)
		}
		svc.Hosts = append(svc.Hosts, pfx.Masked())
	}
	if len(svc.Hosts) > 0 && !c.Forward {
		return Service{}, keyErr(base+".hosts", "hosts needs forward: true (routed hosts are reached through this host)")
	}
	if c.Connections < 0 || c.Connections > MaxConnections {
		return Service{}, keyErr(base+".connections", "must be from 0 (no limit) to %d, got %d", MaxConnections, c.Connections)
	}
	if len(c.Ports) == 0 {
		return Service{}, keyErr(base+".ports", "at least one protected port is required")
	}
	for i, p := range c.Ports {
		if p < 1 || p > 65535 {
			return Service{}, keyErr(fmt.Sprintf("%s.ports[%d]", base, i), "port must be from 1 to 65535, got %d", p)
		}
		if slices.Contains(svc.Ports, uint16(p)) {
			return Service{}, keyErr(fmt.Sprintf("%s.ports[%d]", base, i), "port %d is listed twice", p)
		}
		svc.Ports = append(svc.Ports, uint16(p))
	}
	var err error
	if svc.SPA, err = compileSPA(base, c.SPA, o); err != nil {
		return Service{}, err
	}
	if svc.Fwknop, err = compileFwknop(base, c.Fwknop, o); err != nil {
		return Service{}, err
	}
	if svc.Rotate, err = compileRotate(base, c, o); err != nil {
		return Service{}, err
	}
	if len(c.Sequence) == 0 && svc.SPA == nil && svc.Rotate == nil && svc.Fwknop == nil {
		return Service{}, keyErr(base+".sequence", "nothing opens this service: set a sequence, spa.key_file, fwknop.key_file or rotate.length")
	}
	if len(c.Sequence) > MaxSequence {
		return Service{}, keyErr(base+".sequence", "at most %d knocks, got %d", MaxSequence, len(c.Sequence))
	}
	for i, raw := range c.Sequence {
		key := fmt.Sprintf("%s.sequence[%d]", base, i)
		k, err := ParseKnock(raw)
		if err != nil {
			return Service{}, keyErr(key, "%v", err)
		}
		// Two equal knocks in a row cannot be told from a retransmission.
		if i > 0 && svc.Sequence[i-1] == k {
			return Service{}, keyErr(key, "knock %s repeats the knock before it; a retransmission could not be told from the next step", k)
		}
		svc.Sequence = append(svc.Sequence, k)
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{{".step_timeout", c.StepTimeout}, {".open_for", c.OpenFor}} {
		if d.val <= 0 {
			return Service{}, keyErr(base+d.key, "must be a positive duration, got %s", d.val)
		}
		// A bare number decodes as nanoseconds; nobody means that.
		if d.val < MinDuration {
			return Service{}, keyErr(base+d.key, "%s is shorter than %s; write the unit, e.g. 5s", d.val, MinDuration)
		}
	}
	if c.PlainGrants < 0 {
		return Service{}, keyErr(base+".plain_grants", "must be 0 (half of tracker.max_grants, shared) or more, got %d", c.PlainGrants)
	}
	if c.PlainGrants > 0 && len(svc.Sequence) == 0 {
		return Service{}, keyErr(base+".plain_grants", "bounds the grants of a plain sequence, and the service has none")
	}
	if len(svc.Sequence) > 0 {
		fc := c.FirstConnectWithin
		switch {
		case fc == 0:
			fc = DefaultFirstConnectWithin
		case fc < MinDuration:
			return Service{}, keyErr(base+".first_connect_within", "must be a positive duration of at least %s (write the unit, e.g. 10s), got %s", MinDuration, fc)
		}
		svc.PlainGrants, svc.FirstConnectWithin = c.PlainGrants, fc
	}
	switch c.Closed {
	case ClosedReject:
		svc.Closed = ActionReject
	case ClosedDrop:
		svc.Closed = ActionDrop
	default:
		return Service{}, keyErr(base+".closed", "must be reject or drop, got %q", c.Closed)
	}
	return svc, nil
}

func loadKey(key, path string, o compileOpts) (*spa.Key, error) {
	if o.readKey == nil {
		return nil, keyErr(key, "key files cannot be read here")
	}
	k, err := o.readKey(path)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	return k, nil
}

func compileSPA(base string, c SPAConfig, o compileOpts) (*SPA, error) {
	base += ".spa"
	if c.KeyFile == "" {
		if len(c.KeyFiles) > 0 || c.Port != 0 || c.RequireSource {
			return nil, keyErr(base+".key_file", "spa needs a key_file")
		}
		return nil, nil
	}
	if c.Port < 0 || c.Port > 65535 {
		return nil, keyErr(base+".port", "must be from 1 to 65535 (or 0 for SYN tokens only), got %d", c.Port)
	}
	if c.MaxSkew < time.Second || c.MaxSkew > MaxSkewLimit {
		return nil, keyErr(base+".max_skew", "must be from 1s to %s, got %s", MaxSkewLimit, c.MaxSkew)
	}
	a := &SPA{Port: uint16(c.Port), MaxSkew: c.MaxSkew, RequireSource: c.RequireSource}
	for i, path := range append([]string{c.KeyFile}, c.KeyFiles...) {
		key := base + ".key_file"
		if i > 0 {
			key = fmt.Sprintf("%s.key_files[%d]", base, i-1)
		}
		k, err := loadKey(key, path, o)
		if err != nil {
			return nil, err
		}
		if a.Key(k.ID) != nil {
			return nil, keyErr(key, "key id %d is already used by another key of this service (same key twice?)", k.ID)
		}
		a.Keys = append(a.Keys, k)
	}
	return a, nil
}

func compileFwknop(base string, c FwknopConfig, o compileOpts) (*Fwknop, error) {
	base += ".fwknop"
	if c.KeyFile == "" {
		if c.RequireSource {
			return nil, keyErr(base+".key_file", "fwknop needs a key_file")
		}
		return nil, nil
	}
	if c.Port < 1 || c.Port > 65535 {
		return nil, keyErr(base+".port", "must be from 1 to 65535, got %d", c.Port)
	}
	if c.MaxAge < time.Second || c.MaxAge > MaxSkewLimit {
		return nil, keyErr(base+".max_age", "must be from 1s to %s, got %s", MaxSkewLimit, c.MaxAge)
	}
	if o.readFwknop == nil {
		return nil, keyErr(base+".key_file", "key files cannot be read here")
	}
	k, err := o.readFwknop(c.KeyFile)
	if err != nil {
		return nil, keyErr(base+".key_file", "%v", err)
	}
	return &Fwknop{Port: uint16(c.Port), Key: k, MaxAge: c.MaxAge, RequireSource: c.RequireSource}, nil
}

func compileRotate(base string, c ServiceConfig, o compileOpts) (*Rotate, error) {
	base += ".rotate"
	r := c.Rotate
	if r.Length == 0 {
		if len(r.Range) > 0 || r.KeyFile != "" {
			return nil, keyErr(base+".length", "rotate needs a length")
		}
		return nil, nil
	}
	if r.Length < 1 || r.Length > MaxSequence {
		return nil, keyErr(base+".length", "must be from 1 to %d, got %d", MaxSequence, r.Length)
	}
	if r.Period < time.Second || r.Period%time.Second != 0 {
		return nil, keyErr(base+".period", "must be whole seconds, at least 1s, got %s", r.Period)
	}
	if len(r.Range) != 2 || r.Range[0] < 1 || r.Range[1] > 65535 || r.Range[0] >= r.Range[1] {
		return nil, keyErr(base+".range", "must be [low, high] with 1 <= low < high <= 65535, got %v", r.Range)
	}
	if err := checkRotateSpace(base, r.Length, r.Range[1]-r.Range[0]+1); err != nil {
		return nil, err
	}
	path := r.KeyFile
	if path == "" {
		path = c.SPA.KeyFile
	}
	if path == "" {
		return nil, keyErr(base+".key_file", "rotate needs a key_file (or spa.key_file)")
	}
	k, err := loadKey(base+".key_file", path, o)
	if err != nil {
		return nil, err
	}
	return &Rotate{Key: k, Length: r.Length, Period: r.Period, Lo: uint16(r.Range[0]), Hi: uint16(r.Range[1])}, nil
}

// rotateSpace is the number of sequences spa.RotatingSequence can draw:
// length ports from span, none equal to the one before it, so span for the
// first and span-1 for each next: span·(span-1)^(length-1). It saturates at
// 2^63.
func rotateSpace(length, span int) uint64 {
	if length < 1 || span < 1 {
		return 0
	}
	const limit = 1 << 63
	n := uint64(span)
	for range length - 1 {
		if span-1 == 0 {
			return 0
		}
		if n > limit/uint64(span-1) {
			return limit
		}
		n *= uint64(span - 1)
	}
	return n
}

// rotateBits is log2 of rotateSpace, for messages.
func rotateBits(length, span int) float64 {
	if rotateSpace(length, span) == 0 {
		return 0
	}
	return math.Log2(float64(span)) + float64(length-1)*math.Log2(float64(span-1))
}

// checkRotateSpace refuses a rotating sequence of length over span ports
// whose space is below 2^MinRotateBits, saying what would be enough.
func checkRotateSpace(base string, length, span int) error {
	if rotateSpace(length, span) >= 1<<MinRotateBits {
		return nil
	}
	var fixes []string
	// The narrowest range enough for this length, if a range of ports can
	// be: rotateSpace grows with the span.
	const maxSpan = 65535
	if w := 2 + sort.Search(maxSpan-1, func(i int) bool { return rotateSpace(length, i+2) >= 1<<MinRotateBits }); w <= maxSpan {
		fixes = append(fixes, fmt.Sprintf("widen range to %d ports", w))
	}
	for l := length + 1; l <= MaxSequence; l++ {
		if rotateSpace(l, span) >= 1<<MinRotateBits {
			fixes = append(fixes, fmt.Sprintf("lengthen to %d", l))
			break
		}
	}
	fix := strings.Join(fixes, " or ")
	if fix == "" {
		fix = "widen range and lengthen"
	}
	return keyErr(base+".range", "length %d over %d ports is %.1f bits of possible sequences (no port repeats the one before it), below %d; %s",
		length, span, rotateBits(length, span), MinRotateBits, fix)
}

func protoIndex(proto uint8) int {
	if proto == ProtoUDP {
		return 1
	}
	return 0
}

// IsProtected reports whether TCP port p is protected by any service.
func (s *Set) IsProtected(p uint16) bool { return s.protected[p/64]&(1<<(p%64)) != 0 }

// Cover returns the mask of services protecting TCP port p (bit i = service i).
func (s *Set) Cover(p uint16) uint64 {
	if !s.IsProtected(p) {
		return 0
	}
	return s.cover[p]
}

// IsKnockPort reports whether (proto, port) is a step of some sequence.
func (s *Set) IsKnockPort(proto uint8, p uint16) bool {
	if proto != ProtoTCP && proto != ProtoUDP {
		return false
	}
	return s.knockPorts[protoIndex(proto)][p/64]&(1<<(p%64)) != 0
}

// KnockService returns the service whose sequence contains knock key k.
func (s *Set) KnockService(k uint32) (int, bool) {
	i, ok := s.knockSvc[k]
	return i, ok
}

// ClosedAction returns the closed action of the services in mask (they agree;
// Compile checks it).
func (s *Set) ClosedAction(mask uint64) Action {
	for i := range s.Services {
		if mask&(1<<uint(i)) != 0 {
			return s.Services[i].Closed
		}
	}
	return ActionReject
}

// The methods below make *Set a tracker.Sequences.

// Begins reports the service whose sequence starts with knock key k.
func (s *Set) Begins(k uint32) (int, bool) {
	i, ok := s.begins[k]
	return i, ok
}

// Len is the length of service svc's sequence.
func (s *Set) Len(svc int) int { return len(s.Services[svc].Sequence) }

// Step is knock i of service svc, as a key.
func (s *Set) Step(svc, i int) uint32 { return s.Services[svc].Sequence[i].Key() }

// StepTimeout is the longest gap allowed between two knocks of service svc.
func (s *Set) StepTimeout(svc int) time.Duration { return s.Services[svc].StepTimeout }

// OpenFor is how long a grant of service svc lasts.
func (s *Set) OpenFor(svc int) time.Duration { return s.Services[svc].OpenFor }

// Connections is how many new connections a grant of service svc lets in
// (0: any number).
func (s *Set) Connections(svc int) int { return s.Services[svc].Connections }

// GrantFor is service svc's id: a Set's sequence ids are service indexes.
func (s *Set) GrantFor(svc int) uint64 { return s.Services[svc].ID }

// Keyed is false: a Set's sequence ids are its fixed, plain sequences.
func (s *Set) Keyed(int) bool { return false }

// Gen is 0: a Set alone is one configuration. The verdict engine numbers its
// reloads.
func (s *Set) Gen() uint16 { return 0 }

// Remap keeps nothing: a Set alone knows no other configuration (the
// verdict engine's views do).
func (s *Set) Remap(uint16, int) (int, bool) { return 0, false }

// CoverIDs returns the ids of the services protecting TCP port p.
func (s *Set) CoverIDs(p uint16) []uint64 {
	if !s.IsProtected(p) {
		return nil
	}
	return s.coverIDs[p]
}

// ServiceByID finds a service by its id.
func (s *Set) ServiceByID(id uint64) (int, bool) {
	for i := range s.Services {
		if s.Services[i].ID == id {
			return i, true
		}
	}
	return 0, false
}

// serviceID is FNV-1a of the name: stable across processes and reloads.
func serviceID(name string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h
}

// KnockPorts lists the fixed knock ports of proto, sorted.
func (s *Set) KnockPorts(proto uint8) []uint16 {
	var out []uint16
	for _, svc := range s.Services {
		for _, k := range svc.Sequence {
			if k.Proto == proto && !slices.Contains(out, k.Port) {
				out = append(out, k.Port)
			}
		}
	}
	slices.Sort(out)
	return out
}

// UDPPorts lists the UDP ports knockwall must see, sorted: knocks, SPA
// ports and fwknop ports.
func (s *Set) UDPPorts() []uint16 {
	out := s.KnockPorts(ProtoUDP)
	for p := range s.spaPorts {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for p := range s.fwknopPorts {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// ProtectedPorts lists the TCP ports of this host's own services (not
// forward ones), sorted: what the input guard keeps closed.
func (s *Set) ProtectedPorts() []uint16 {
	return s.portsWhere(func(svc *Service) bool { return !svc.Forward })
}

// ForwardPorts lists the TCP ports port forwards send on (forward services
// without hosts), sorted, as the client uses them (before DNAT).
func (s *Set) ForwardPorts() []uint16 {
	return s.portsWhere(func(svc *Service) bool { return svc.Forward })
}

func (s *Set) portsWhere(keep func(*Service) bool) []uint16 {
	var out []uint16
	for i := range s.Services {
		if svc := &s.Services[i]; keep(svc) && len(svc.Hosts) == 0 {
			for _, p := range svc.Ports {
				if !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// RoutedPort is a routed destination prefix and a TCP port a service
// protects on it.
type RoutedPort struct {
	Prefix netip.Prefix
	Port   uint16
}

// RoutedPorts lists every (prefix, port) of the services that protect
// routed hosts.
func (s *Set) RoutedPorts() []RoutedPort {
	var out []RoutedPort
	for _, i := range s.routed {
		svc := &s.Services[i]
		for _, h := range svc.Hosts {
			for _, p := range svc.Ports {
				if rp := (RoutedPort{h, p}); !slices.Contains(out, rp) {
					out = append(out, rp)
				}
			}
		}
	}
	return out
}

// RoutedPrefixes lists the prefixes of routed hosts any service covers.
func (s *Set) RoutedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, i := range s.routed {
		for _, h := range s.Services[i].Hosts {
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// IsRouted reports whether dst is in a prefix of routed hosts.
func (s *Set) IsRouted(dst netip.Addr) bool {
	for _, i := range s.routed {
		for _, h := range s.Services[i].Hosts {
			if h.Contains(dst) {
				return true
			}
		}
	}
	return false
}

// RouterMode reports whether any service protects forwarded connections:
// diversion then happens before routing (prerouting), and a guard sits on
// the forward path too.
func (s *Set) RouterMode() bool {
	for i := range s.Services {
		if s.Services[i].Forward {
			return true
		}
	}
	return false
}

// RoutedCover returns the services whose routed hosts include dst and
// which protect TCP port p there. It does not allocate.
func (s *Set) RoutedCover(dst netip.Addr, p uint16) (mask uint64) {
	for _, i := range s.routed {
		svc := &s.Services[i]
		if !slices.Contains(svc.Ports, p) {
			continue
		}
		for _, h := range svc.Hosts {
			if h.Contains(dst) {
				mask |= 1 << uint(i)
				break
			}
		}
	}
	return mask
}

// IDs appends to dst the ids of the services in mask.
func (s *Set) IDs(dst []uint64, mask uint64) []uint64 {
	for i := range s.Services {
		if mask&(1<<uint(i)) != 0 {
			dst = append(dst, s.Services[i].ID)
		}
	}
	return dst
}

// FwknopPorts lists the fwknop ports, sorted (each is a UDP and a TCP port).
func (s *Set) FwknopPorts() []uint16 {
	out := make([]uint16, 0, len(s.fwknopPorts))
	for p := range s.fwknopPorts {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// FwknopService returns the service whose fwknop port is p (UDP or TCP).
func (s *Set) FwknopService(p uint16) (int, bool) {
	if len(s.fwknopPorts) == 0 {
		return 0, false
	}
	i, ok := s.fwknopPorts[p]
	return i, ok
}

// HasFwknop reports whether any service in mask takes fwknop packets.
func (s *Set) HasFwknop(mask uint64) bool {
	for i := range s.Services {
		if mask&(1<<uint(i)) != 0 && s.Services[i].Fwknop != nil {
			return true
		}
	}
	return false
}

// SPAService returns the service whose SPA port is UDP port p.
func (s *Set) SPAService(p uint16) (int, bool) {
	if len(s.spaPorts) == 0 {
		return 0, false
	}
	i, ok := s.spaPorts[p]
	return i, ok
}

// ServiceByName finds a service by name without allocating.
func (s *Set) ServiceByName(name []byte) (int, bool) {
	for i := range s.Services {
		if s.Services[i].Name == string(name) {
			return i, true
		}
	}
	return 0, false
}

// Rotating lists the indexes of services with a rotating sequence.
func (s *Set) Rotating() []int { return s.rotating }

// RotatingRange returns the rotating service whose range holds TCP port p.
func (s *Set) RotatingRange(p uint16) (int, bool) {
	for _, i := range s.rotating {
		if r := s.Services[i].Rotate; p >= r.Lo && p <= r.Hi {
			return i, true
		}
	}
	return 0, false
}

// HasSPA reports whether any service in mask takes SPA tokens.
func (s *Set) HasSPA(mask uint64) bool {
	for i := range s.Services {
		if mask&(1<<uint(i)) != 0 && s.Services[i].SPA != nil {
			return true
		}
	}
	return false
}
