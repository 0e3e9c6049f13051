package tracker

import (
	"hash/maphash"
	"math"
	"net/netip"
	"time"
)

// Allow spends one knock attempt of src's budget at now and reports whether
// there was one. The budget is a token bucket per IPv4 address and per IPv6
// /64, and for IPv6 also one per /48 (Prefix48Hosts); a knock passes only
// if every bucket it is charged to can pay, and then all pay.
//
// Buckets live in a bounded LRU table, so a flood of new (spoofed) sources
// evicts them. Neither a new bucket nor a re-made one starts full: it holds
// min(NewBucketKnocks, knock_burst) knocks, less the debt its key had when
// it was evicted, which a per-shard memory keeps (shard.debts) until
// refilling would have repaid it. So evicting one's own bucket gives back no
// more than waiting would, unless spoofed sources also push the debt out of
// that memory: each must leave a larger debt (knock more often than the debt
// is knocks) and only about one in shards × cells per shard / 2 lands on its
// cell, some 32768 with the default max_pending.
//
// No cap bounds how many buckets are made, daemon-wide: under a spoofed
// flood every new bucket evicts one, so such a cap would be spent by the
// flood and then refuse the real clients that come during it (the flood
// tests' legitimate tries). The memory of debts does the cap's job without
// that: it costs the flood nothing and gives an evicted source nothing back,
// and a real client, which owes nothing, starts a bucket with enough for its
// sequence however often the flood evicts it.
//
// It does not allocate.
func (t *Tracker) Allow(src netip.Addr, now time.Time) bool {
	if t.knockCost == 0 {
		return true
	}
	key, v6 := src.As16(), src.Is6() && !src.Is4In6()
	var key48 [16]byte
	if v6 {
		// One host usually holds a whole /64, and would otherwise have
		// 2^64 budgets.
		clear(key[8:])
		key48 = prefix48Key(key)
	}
	// A /64 and its /48 share a shard: one lock covers both buckets.
	s := t.limitShard(&key, &key48, v6)
	ts := t.since(now)
	s.mu.Lock()
	defer s.mu.Unlock()

	b, known := t.bucketLocked(s, &key, ts)
	allowed := b.tokens >= t.knockCost
	if v6 {
		share := t.knockCost / Prefix48Hosts
		p, _ := t.bucketLocked(s, &key48, ts)
		prefixPays := p.tokens >= share
		if allowed = allowed && prefixPays; allowed {
			p.tokens -= share
		}
		t.putLocked(s, &key48, p, ts)
		if !known && !prefixPays {
			// The /48 cannot pay: no new /64 bucket for it. Its /64s
			// cannot push other sources' buckets out faster than the
			// /48's budget allows.
			t.limited.Add(1)
			return false
		}
	}
	if allowed {
		b.tokens -= t.knockCost
	} else {
		t.limited.Add(1)
	}
	t.putLocked(s, &key, b, ts)
	return allowed
}

// prefix48Mark ends every /48 bucket key.
const prefix48Mark = 0x30

// prefix48Key is the bucket key of the /48 of the /64 key k: the prefix,
// then zeros, then prefix48Mark. No /64 key (last eight bytes zero) and no
// IPv4 key (::ffff:a.b.c.d) has that form.
func prefix48Key(k [16]byte) [16]byte {
	clear(k[6:])
	k[15] = prefix48Mark
	return k
}

// isPrefix48Key reports whether k is a key prefix48Key makes.
func isPrefix48Key(k *[16]byte) bool {
	return k[15] == prefix48Mark && [9]byte(k[6:15]) == [9]byte{}
}

// limitShard picks the shard of a knock-rate key: for IPv6 by its /48, so
// that a /64 and its /48 are in one shard.
func (t *Tracker) limitShard(key, key48 *[16]byte, v6 bool) *shard {
	if t.mask == 0 {
		return &t.shards[0]
	}
	if v6 {
		key = key48
	}
	return &t.shards[mix(key, t.seed)>>58&t.mask]
}

// bucketLocked returns key's bucket refilled to ts, and whether the table
// held it. A key the table does not hold gets a new bucket: knockNew, less
// the debt remembered for it.
func (t *Tracker) bucketLocked(s *shard, key *[16]byte, ts int64) (bucket, bool) {
	if b, ok := s.limits.Peek(netip.AddrFrom16(*key)); ok {
		b.tokens = min(b.tokens+ts-b.last, t.knockMax)
		b.last = ts
		return b, true
	}
	var owed int64
	h, i, j := s.debtCells(key)
	for _, c := range [2]*debt{&s.debts[i], &s.debts[j]} {
		if c.h == h {
			owed = max(owed, c.at-ts)
		}
	}
	return bucket{tokens: t.knockNew - min(owed, t.knockNew), last: ts}, false
}

// putLocked stores key's bucket as the most recent. When that evicts the
// least recent bucket, the evicted key's debt (what it lacks of knockNew,
// refilled to ts) is remembered.
func (t *Tracker) putLocked(s *shard, key *[16]byte, b bucket, ts int64) {
	vk, v, evicted := s.limits.Add(netip.AddrFrom16(*key), b)
	if evicted {
		s.rememberLocked(&vk, t.knockNew-min(v.tokens+ts-v.last, t.knockMax), ts)
	}
}

// rememberLocked records that key owes owed nanoseconds of budget at ts. The
// bucket it was evicted with started from what the memory held for key, so
// owed is the whole truth and replaces it; a key that owes nothing frees
// its cell.
func (s *shard) rememberLocked(key *[16]byte, owed, ts int64) {
	h, i, j := s.debtCells(key)
	ci, cj := &s.debts[i], &s.debts[j]
	for _, c := range [2]*debt{ci, cj} {
		if c.h == h {
			if owed > 0 {
				c.at = ts + owed
			} else {
				c.at = math.MinInt64 / 2
			}
			return
		}
	}
	if owed <= 0 {
		return
	}
	// The cell with the smaller debt left, in knocks, if it is smaller
	// than this one; a free cell has none.
	left := func(c *debt) int64 { return max(c.at-ts, 0) * weight(c.h) }
	c := ci
	if left(cj) < left(ci) {
		c = cj
	}
	if left(c) < owed*weight(h) {
		c.h, c.at = h, ts+owed
	}
}

// debtCells are key's hash, its low bit set for a /48 key and clear
// otherwise, and its two cells in s.debts.
func (s *shard) debtCells(key *[16]byte) (h, i, j uint64) {
	raw := maphash.Bytes(s.debtSeed, key[:])
	h = raw &^ prefix48Bit
	if isPrefix48Key(key) {
		h |= prefix48Bit
	}
	return h, raw & s.debtMask, (raw >> 32) & s.debtMask
}
