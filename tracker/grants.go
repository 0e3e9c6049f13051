package tracker

import (
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
}

// at converts a time on the tracker's clock back to the caller's.
func (t *Tracker) at(ts int64) time.Time { return t.epoch.Add(time.Duration(ts)) }

// Grants returns the grants live at now, sorted by source then service id.
func (t *Tracker) Grants(now time.Time) []GrantInfo {
	ts := t.since(now)
	var out []GrantInfo
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, exp := range s.grants {
			if exp > ts {
				out = append(out, GrantInfo{Src: k.addr(), ID: k.id, Expires: t.at(exp)})
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b GrantInfo) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// Expiry returns when src's grant of service id ends, if it is live at now.
func (t *Tracker) Expiry(src netip.Addr, id uint64, now time.Time) (time.Time, bool) {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.grants[keyOf(src, id)]
	if !ok || exp <= t.since(now) {
		return time.Time{}, false
	}
	return t.at(exp), true
}

// GrantUntil records a grant of service id to src that ends at until, as a
// manual grant or one restored from a state file does. An existing grant
// is set to end at until (shortened or lengthened). It reports false when
// the grant table is full of live grants, or until is not after now.
func (t *Tracker) GrantUntil(src netip.Addr, id uint64, now, until time.Time) bool {
	d := until.Sub(now)
	if d <= 0 {
		return false
	}
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := t.since(now)
	key := keyOf(src, id)
	if _, ok := s.grants[key]; ok {
		s.grants[key] = ts + int64(d)
		return true
	}
	return t.addGrantLocked(s, src, id, ts, d)
}

// Revoke ends src's grants at once: of service id, or of every service when
// id is 0. It returns the grants it ended (live or lapsed but not yet
// expired).
func (t *Tracker) Revoke(src netip.Addr, id uint64) []GrantInfo {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []GrantInfo
	for k, exp := range s.grants {
		if k.addr() != src || (id != 0 && k.id != id) {
			continue
		}
		delete(s.grants, k)
		t.grants.Add(-1)
		out = append(out, GrantInfo{Src: src, ID: k.id, Expires: t.at(exp)})
	}
	return out
}
