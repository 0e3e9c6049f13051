package verdict

import "github.com/knockwall/knockwall/rules"

// kind is what a diverted packet is to knockwall, decided by its
// destination alone; the tracker and the tokens decide the rest.
type kind uint8

const (
	kindUnprotected kind = iota // a SYN to a port no service protects
	kindProtected               // a SYN to a protected port (of this host or a routed host)
	kindKnock                   // a knock port or a port of a rotating range
	kindSPA                     // a datagram to an SPA port
	kindFwknop                  // a datagram or a SYN to an fwknop port
	kindUDP                     // a new UDP flow to no knock or token port
)

// class is a packet's kind with what the engine needs to judge it.
type class struct {
	kind   kind
	svc    int    // the service of a knock, SPA or fwknop port; -1 otherwise
	mask   uint64 // kindProtected: the services protecting the port
	key    uint32 // the knock key the tracker observes; 0 for routed hosts
	routed bool   // addressed to a routed host, not to this host
}

// classify sorts a valid SYN or new UDP datagram. A routed host's port is
// never a knock or token port (those are this host's own); a port of this
// host is a token port first, then a knock port, for UDP, and for TCP a
// protected port first, then a rotating range, a knock port, an fwknop port.
func (e *Engine) classify(set *rules.Set, p *Parsed) class {
	c := class{svc: -1, key: rules.KnockKey(p.IPProto, p.DstPort)}
	if set.IsRouted(p.Dst) && !e.isLocal(p.Dst) {
		c.routed, c.key = true, 0
		if p.IPProto == protoTCP {
			c.mask = set.RoutedCover(p.Dst, p.DstPort)
		}
		switch {
		case c.mask != 0:
			c.kind = kindProtected
		case p.IPProto == protoUDP:
			c.kind = kindUDP
		}
		return c
	}
	if p.IPProto == protoUDP {
		if i, ok := set.SPAService(p.DstPort); ok {
			c.kind, c.svc = kindSPA, i
		} else if i, ok := set.FwknopService(p.DstPort); ok {
			c.kind, c.svc = kindFwknop, i
		} else if i, ok := set.KnockService(c.key); ok {
			c.kind, c.svc = kindKnock, i
		} else {
			c.kind = kindUDP
		}
		return c
	}
	if c.mask = set.Cover(p.DstPort); c.mask != 0 {
		c.kind = kindProtected
	} else if i, ok := set.RotatingRange(p.DstPort); ok {
		// The whole range is reserved for knocking and answers like
		// closed ports, so it does not betray the current sequence.
		c.kind, c.svc = kindKnock, i
	} else if i, ok := set.KnockService(c.key); ok {
		c.kind, c.svc = kindKnock, i
	} else if i, ok := set.FwknopService(p.DstPort); ok {
		c.kind, c.svc = kindFwknop, i
	}
	return c
}
