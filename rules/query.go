package rules

import (
	"net/netip"
	"slices"
	"time"
)

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
