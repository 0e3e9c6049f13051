package rules

import (
	"net/netip"
	"time"

	"github.com/knockwall/knockwall/fwknop"
	"github.com/knockwall/knockwall/spa"
)

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
