package spa

import (
	"encoding/binary"
	"sync"
)

// replayShards splits the replay cache's lock; a power of two.
const replayShards = 16

// ReplayCache remembers the nonces of accepted tokens until they could no
// longer pass the timestamp check anyway. It is bounded, and when it is full
// of nonces still in their window it refuses new tokens rather than forget an
// old nonce early: forgetting would let that token be replayed. Only tokens
// whose MAC verified are ever added, so a flood without the key cannot fill it.
type ReplayCache struct {
	shards [replayShards]replayShard
}

type replayShard struct {
	mu  sync.Mutex
	m   map[[NonceSize]byte]int64 // nonce → unix nanos after which it is forgotten
	max int
	_   [40]byte // keep neighbouring locks off one cache line
}

// NewReplayCache holds at most max nonces (split evenly over shards).
func NewReplayCache(max int) *ReplayCache {
	c := &ReplayCache{}
	per := max/replayShards + 1
	for i := range c.shards {
		c.shards[i].m = make(map[[NonceSize]byte]int64, per)
		c.shards[i].max = per
	}
	return c
}

// Add records nonce until forgetAt (unix nanoseconds). It returns ErrReplay if
// the nonce is still remembered, ErrReplayFull if there is no room, nil when
// recorded. now is unix nanoseconds.
func (c *ReplayCache) Add(nonce [NonceSize]byte, forgetAt, now int64) error {
	s := &c.shards[binary.LittleEndian.Uint64(nonce[:8])%replayShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[nonce]; ok && at > now {
		return ErrReplay
	}
	if len(s.m) >= s.max {
		s.purgeLocked(now)
		if len(s.m) >= s.max {
			return ErrReplayFull
		}
	}
	s.m[nonce] = forgetAt
	return nil
}

// Purge forgets nonces whose window has passed; call it from a ticker.
func (c *ReplayCache) Purge(now int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.purgeLocked(now)
		s.mu.Unlock()
	}
}

func (s *replayShard) purgeLocked(now int64) {
	for n, at := range s.m {
		if at <= now {
			delete(s.m, n)
		}
	}
}

// Len is the number of nonces remembered.
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
