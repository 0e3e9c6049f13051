package fwknop

import (
	"encoding/binary"
	"sync"
)

// replayShards splits the replay cache's lock; a power of two.
const replayShards = 16

// ReplayCache remembers the replay keys (packet digests) of accepted
// packets until they could no longer pass the timestamp check anyway (see
// ForgetAt). It is bounded, and when it is full of keys still in their
// window it refuses new packets rather than forget an old key early:
// forgetting would let that packet be replayed. Only packets whose HMAC
// verified are ever added, so a flood without the key cannot fill it. It
// follows spa.ReplayCache, keyed by a SHA-256 instead of a 16-byte nonce.
type ReplayCache struct {
	shards [replayShards]replayShard
}

type replayShard struct {
	mu  sync.Mutex
	m   map[[ReplayKeySize]byte]int64 // key → unix nanos after which it is forgotten
	max int
	_   [40]byte // keep neighbouring locks off one cache line
}

// NewReplayCache holds at most max keys (split evenly over shards).
func NewReplayCache(max int) *ReplayCache {
	c := &ReplayCache{}
	per := max/replayShards + 1
	for i := range c.shards {
		c.shards[i].m = make(map[[ReplayKeySize]byte]int64, per)
		c.shards[i].max = per
	}
	return c
}

// Add records key until forgetAt (unix nanoseconds). It returns ErrReplay if
// the key is still remembered, ErrReplayFull if there is no room, nil when
// recorded. now is unix nanoseconds.
func (c *ReplayCache) Add(key [ReplayKeySize]byte, forgetAt, now int64) error {
	s := &c.shards[binary.LittleEndian.Uint64(key[:8])%replayShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[key]; ok && at > now {
		return ErrReplay
	}
	if len(s.m) >= s.max {
		s.purgeLocked(now)
		if len(s.m) >= s.max {
			return ErrReplayFull
		}
	}
	s.m[key] = forgetAt
	return nil
}

// Purge forgets keys whose window has passed; call it from a ticker.
func (c *ReplayCache) Purge(now int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.purgeLocked(now)
		s.mu.Unlock()
	}
}

func (s *replayShard) purgeLocked(now int64) {
	for k, at := range s.m {
		if at <= now {
			delete(s.m, k)
		}
	}
}

// Len is the number of keys remembered.
func (c *ReplayCache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
