package tracker

import (
	"net/netip"
	"time"
)

// Granted reports whether src holds a live grant for one of the services ids
// that lets in a connection from srcPort (see Admit).
func (t *Tracker) Granted(src netip.Addr, ids []uint64, srcPort uint16, now time.Time) bool {
	return t.Admit(src, ids, srcPort, now).OK
}

// Admission is Admit's answer.
type Admission struct {
	OK bool
	// ID is the service whose grant let the connection in.
	ID uint64
	// First: the first connection of a grant of a plain sequence, which
	// until now would have ended at its Room.FirstConnect; from now on it
	// lasts its whole open_for (the moment to mirror it into the kernel).
	First bool
}

// Admit lets in a connection from src's srcPort to one of the services ids
// if src holds a live grant that allows it: any grant without a connection
// limit, a one-shot grant with connections left (one is taken), or a
// retransmitted SYN of a one-shot grant's last connection (the same source
// port, within SYNRetransmitWindow of it). It does not allocate.
func (t *Tracker) Admit(src netip.Addr, ids []uint64, srcPort uint16, now time.Time) Admission {
	if len(ids) == 0 {
		return Admission{}
	}
	s := t.shardOf(src)
	ts := t.since(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	exhausted := false // a live one-shot grant with no connection left
	for _, id := range ids {
		key := keyOf(src, id)
		g, ok := s.grants[key]
		if !ok || g.ends() <= ts {
			continue
		}
		a := Admission{OK: true, ID: id, First: g.firstBy != 0}
		g.firstBy = 0
		switch {
		case !g.limited:
		case g.lastPort != 0 && g.lastPort == srcPort && ts-g.lastAt <= int64(SYNRetransmitWindow):
		case g.left > 0:
			g.left--
			g.lastPort, g.lastAt = srcPort, ts
		default:
			exhausted = true
			continue
		}
		if a.First || g.limited {
			s.grants[key] = g
		}
		return a
	}
	if exhausted {
		t.exhausted.Add(1)
	}
	return Admission{}
}
