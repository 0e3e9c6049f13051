// Package replay is the bounded memory of accepted single-packet
// authorizations (knockwall's SPA nonces, fwknop packet digests) that makes
// a second sending of one fail.
package replay

import "sync"

// shards splits the cache's lock; a power of two.
const shards = 16

// Cache remembers the keys of accepted packets until they could no longer
// pass their timestamp check anyway. It is bounded, and when it is full of
// keys still in their window it refuses new packets rather than forget an
// old key early: forgetting would let that packet be replayed. Callers add
// only packets whose MAC verified, so a flood without the key cannot fill
// it.
type Cache[K comparable] struct {
	shards   [shards]shard[K]
	shardOf  func(K) uint64
	replayed error
	full     error
}

type shard[K comparable] struct {
	mu  sync.Mutex
	m   map[K]int64 // key → unix nanos after which it is forgotten
	max int
	_   [40]byte // keep neighbouring locks off one cache line
}

// New holds at most max keys (split evenly over the shards, picked by
// shardOf: the keys are random or digests, so a few of their bytes do).
// Add returns replayed for a key it remembers and full when there is no
// room.
func New[K comparable](max int, shardOf func(K) uint64, replayed, full error) *Cache[K] {
	c := &Cache[K]{shardOf: shardOf, replayed: replayed, full: full}
	per := max/shards + 1
	for i := range c.shards {
		c.shards[i].m = make(map[K]int64, per)
		c.shards[i].max = per
	}
	return c
}

// Add records key until forgetAt (unix nanoseconds). now is unix
// nanoseconds. It does not allocate while the shard has room.
func (c *Cache[K]) Add(key K, forgetAt, now int64) error {
	s := &c.shards[c.shardOf(key)%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[key]; ok && at > now {
		return c.replayed
	}
	if len(s.m) >= s.max {
		s.purgeLocked(now)
		if len(s.m) >= s.max {
			return c.full
		}
	}
	s.m[key] = forgetAt
	return nil
}

// Purge forgets keys whose window has passed; call it from a ticker.
func (c *Cache[K]) Purge(now int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.purgeLocked(now)
		s.mu.Unlock()
	}
}

func (s *shard[K]) purgeLocked(now int64) {
	for k, at := range s.m {
		if at <= now {
			delete(s.m, k)
		}
	}
}

// Len is the number of keys remembered.
func (c *Cache[K]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
