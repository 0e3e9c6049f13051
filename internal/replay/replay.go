// Package replay is the bounded memory of accepted single-packet
// authorizations (knockwall's SPA nonces, fwknop packet digests) that makes
// a second sending of one fail.
package replay

import (
	"errors"
	"hash/maphash"
	"sync"
)

// shards splits the cache's lock; a power of two.
const shards = 16

// initialPerShard is the room each shard is made with; it grows, up to
// its bound, only while more keys than that are live in it at once. A
// service's tokens rarely come faster than a few a second, so the room made
// up front (4096 keys a cache) is never outgrown but by a flood of valid
// tokens, that is by the holder of that service's key; sizing every
// service's caches for tracker.max_nonces up front would cost megabytes a
// service (bench/RESULTS.md, "Replay caches per service").
const initialPerShard = 256

// ErrSealed refuses a packet once the cache is sealed: its content is being
// handed to the next process (a clean restart), and a packet accepted now
// would be missing from it.
var ErrSealed = errors.New("replay: cache sealed for a restart")

// Cache remembers the keys of accepted packets until they could no longer
// pass their timestamp check anyway. It is bounded, and when it is full of
// keys still in their window it refuses new packets rather than forget an
// old key early: forgetting would let that packet be replayed. Callers add
// only packets whose MAC verified, so a flood without the key cannot fill
// it.
//
// The shard of a key is chosen by a hash keyed with a seed drawn at random
// for each cache (hash/maphash), so whoever chooses the keys (a holder of
// the MAC key picks nonces; packet digests follow from bytes the sender
// picks) cannot aim them all at one shard: to fill one shard they must fill
// about all of them, that is the whole cache.
type Cache[K comparable] struct {
	shards   [shards]shard[K]
	seed     maphash.Seed
	replayed error
	full     error
}

type shard[K comparable] struct {
	mu     sync.Mutex
	m      map[K]int64 // key → unix nanos after which it is forgotten
	max    int
	sealed bool
	_      [32]byte // keep neighbouring locks off one cache line
}

// Entry is one remembered key and when it may be forgotten (unix
// nanoseconds).
type Entry[K comparable] struct {
	Key      K
	ForgetAt int64
}

// New holds at most max keys (split evenly over the shards). Add returns
// replayed for a key it remembers and full when there is no room.
func New[K comparable](max int, replayed, full error) *Cache[K] {
	c := &Cache[K]{seed: maphash.MakeSeed(), replayed: replayed, full: full}
	per := max/shards + 1
	for i := range c.shards {
		c.shards[i].m = make(map[K]int64, min(per, initialPerShard))
		c.shards[i].max = per
	}
	return c
}

func (c *Cache[K]) shardOf(key K) *shard[K] {
	return &c.shards[maphash.Comparable(c.seed, key)%shards]
}

// Add records key until forgetAt (unix nanoseconds). now is unix
// nanoseconds. It does not allocate while the shard holds fewer keys than
// it was made with room for (initialPerShard).
func (c *Cache[K]) Add(key K, forgetAt, now int64) error {
	s := c.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[key]; ok && at > now {
		return c.replayed
	}
	if s.sealed {
		return ErrSealed
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

// Restore puts back a key that an earlier process remembered, until
// forgetAt. It reports false when there is no room for it (the caller must
// then not rely on the restored memory being whole).
func (c *Cache[K]) Restore(key K, forgetAt, now int64) bool {
	if forgetAt <= now {
		return true // lapsed: the timestamp check refuses its packet anyway
	}
	s := c.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[key]; ok {
		s.m[key] = max(at, forgetAt)
		return true
	}
	if len(s.m) >= s.max {
		s.purgeLocked(now)
		if len(s.m) >= s.max {
			return false
		}
	}
	s.m[key] = forgetAt
	return true
}

// Seal makes every later Add fail with ErrSealed (a replay is still told
// as one) and returns the keys still in their window at now: all the
// packets this cache ever accepted that could still pass their timestamp
// check. It allocates; it is for a clean stop.
func (c *Cache[K]) Seal(now int64) []Entry[K] {
	var out []Entry[K]
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.sealed = true
		for k, at := range s.m {
			if at > now {
				out = append(out, Entry[K]{Key: k, ForgetAt: at})
			}
		}
		s.mu.Unlock()
	}
	return out
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
