package tracker

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"time"
)

// GrantInfo is one live grant, for status, state files and the kernel's
// fast-path sets. None of this is on the packet path.
type GrantInfo struct {
	Src     netip.Addr
	ID      uint64    // the service id
	Expires time.Time // on the caller's clock (carries the monotonic reading of the tracker's epoch)
	How     Method
	// Limited: a one-shot grant, with Left new connections still allowed
	// (LastPort: the source port of the last one).
	Limited  bool
	Left     int
	LastPort uint16
	// Awaiting: a grant of a plain sequence that has let in no connection
	// yet; Expires is then when it ends unless one comes. It is not
	// mirrored into the kernel: its first SYN must reach the engine.
	Awaiting bool
}

func (t *Tracker) info(k grantKey, g grant) GrantInfo {
	return GrantInfo{Src: k.addr(), ID: k.id, Expires: t.at(g.ends()), How: g.how, Limited: g.limited, Left: int(g.left),
		LastPort: g.lastPort, Awaiting: g.firstBy != 0}
}

// at converts a time on the tracker's clock back to the caller's.
func (t *Tracker) at(ts int64) time.Time { return t.epoch.Add(time.Duration(ts)) }

// Grants returns the grants live at now, sorted by source then service id.
func (t *Tracker) Grants(now time.Time) []GrantInfo {
	ts := t.since(now)
	var out []GrantInfo
	t.eachShard(func(s *shard) {
		for k, g := range s.grants {
			if g.ends() > ts {
				out = append(out, t.info(k, g))
			}
		}
	})
	slices.SortFunc(out, func(a, b GrantInfo) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// Expiry returns when src's grant of service id ends, if it is live at now
// and has let in its first connection or needs none (not Awaiting): what
// the kernel's fast path may hold.
func (t *Tracker) Expiry(src netip.Addr, id uint64, now time.Time) (time.Time, bool) {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.grants[keyOf(src, id)]
	if !ok || g.firstBy != 0 || g.exp <= t.since(now) {
		return time.Time{}, false
	}
	return t.at(g.exp), true
}

// Put records the grant g describes, as an operator's grant or one
// restored from a state file: it ends at g.Expires (an existing grant of
// the same source and service is replaced), with g's connection limit. A
// grant of a plain sequence takes its service's room, as a knocked one
// does, and when g.Awaiting it ends early unless a connection comes within
// the room's FirstConnect. It reports false when the grant table (or the
// room) is full of live grants, or g.Expires is not after now.
func (t *Tracker) Put(g GrantInfo, now time.Time) bool {
	d := g.Expires.Sub(now)
	if d <= 0 {
		return false
	}
	s := t.shardOf(g.Src)
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := t.since(now)
	// A SYN from LastPort is no retransmission: the window of the last
	// connection is not known.
	v := grant{exp: ts + int64(d), how: g.How, limited: g.Limited, lastPort: g.LastPort, lastAt: math.MinInt64 / 2}
	if g.Limited {
		v.left = uint16(min(max(g.Left, 0), 65535))
	}
	return t.addGrantLocked(s, g.Src, g.ID, ts, v, g.Awaiting)
}

// Revoke ends src's grants at once: of service id, or of every service when
// id is 0. It returns the grants it ended (live or lapsed but not yet
// expired).
func (t *Tracker) Revoke(src netip.Addr, id uint64) []GrantInfo {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []GrantInfo
	for k, g := range s.grants {
		if k.addr() != src || (id != 0 && k.id != id) {
			continue
		}
		delete(s.grants, k)
		t.grants.Add(-1)
		if g.plain {
			t.freePlain(k.id)
		}
		out = append(out, t.info(k, g))
	}
	return out
}

// PendingBy counts the sources with knock progress toward each service,
// by service id, as seqs (the sequences in force) names them. Progress
// recorded under another configuration is not counted. It walks every
// pending entry; call it for status, not per packet.
func (t *Tracker) PendingBy(seqs Sequences) map[uint64]int {
	out := map[uint64]int{}
	gen := seqs.Gen()
	t.eachShard(func(s *shard) {
		s.pending.each(func(p *progress) {
			if p.gen == gen {
				out[seqs.GrantFor(int(p.svc))]++
			}
		})
	})
	return out
}
