package tracker

import (
	"net/netip"
	"time"
)

// Lookup returns src's grant of service id, if it is live at now (a plain
// sequence's grant awaiting its first connection ends at its deadline).
func (t *Tracker) Lookup(src netip.Addr, id uint64, now time.Time) (GrantInfo, bool) {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	k := keyOf(src, id)
	g, ok := s.grants[k]
	if !ok || g.ends() <= t.since(now) {
		return GrantInfo{}, false
	}
	return t.info(k, g), true
}
