package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
)

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
