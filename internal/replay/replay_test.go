package replay

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

var (
	errReplayed = errors.New("replayed")
	errFull     = errors.New("full")
)

type key [16]byte

func newCache(max int) *Cache[key] { return New[key](max, errReplayed, errFull) }

// keysInShard returns n keys that land in shard 0 of c.
func keysInShard(c *Cache[key], n int) []key {
	var out []key
	var k key
	for i := uint64(0); len(out) < n; i++ {
		binary.LittleEndian.PutUint64(k[8:], i)
		if c.shardOf(k) == &c.shards[0] {
			out = append(out, k)
		}
	}
	return out
}

// TestCache: a key is refused within its window and forgotten after it; a
// full shard refuses new keys rather than forget live ones early, and has
// room again once they lapse.
func TestCache(t *testing.T) {
	c := newCache(16) // one slot per shard
	sec := int64(time.Second)
	k1 := key{1}
	if err := c.Add(k1, 10*sec, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Add(k1, 10*sec, 5*sec); err != errReplayed {
		t.Fatalf("replay within window: err = %v, want the replayed error", err)
	}
	// After its window the key is forgotten; by then the timestamp check
	// refuses the packet anyway.
	if err := c.Add(k1, 30*sec, 11*sec); err != nil {
		t.Fatalf("after window: err = %v", err)
	}
	same := keysInShard(c, 4) // one shard, as the cache's seed places them
	added := 0
	var full error
	for _, k := range same {
		if err := c.Add(k, 100*sec, 12*sec); err != nil {
			full = err
			break
		}
		added++
	}
	if full != errFull {
		t.Fatalf("filling a shard: err = %v after %d adds, want the full error", full, added)
	}
	if err := c.Add(same[0], 100*sec, 13*sec); err != errReplayed {
		t.Fatalf("a remembered key was forgotten when full: err = %v", err)
	}
	if err := c.Add(same[3], 200*sec, 101*sec); err != nil {
		t.Fatalf("after the live keys expired: err = %v", err)
	}
	c.Purge(1000 * sec)
	if c.Len() != 0 {
		t.Fatalf("Len after purge = %d", c.Len())
	}
}

// TestKeyedShards: keys that all fell in one shard under the unkeyed
// choice (their first 8 bytes, little endian, mod the shard count: here
// equal first bytes) spread over every shard, differently in two caches;
// so a small cache takes as many of them as it has room for, not the room
// of the one shard the unkeyed choice gave them.
func TestKeyedShards(t *testing.T) {
	const n = 256
	unkeyed := func(k key) uint64 { return binary.LittleEndian.Uint64(k[:8]) % shards }
	keys := make([]key, n)
	for i := range keys {
		keys[i][0] = 7
		binary.LittleEndian.PutUint64(keys[i][8:], uint64(i))
		if unkeyed(keys[i]) != unkeyed(keys[0]) {
			t.Fatal("the test's keys do not collide under the unkeyed choice")
		}
	}
	a, b := newCache(shards*64), newCache(shards*64)
	// 256 keys over 16 shards at random leave one empty with probability
	// below 16·(15/16)^256 < 1e-6.
	var used [shards]bool
	sameAll := true
	for _, k := range keys {
		used[shardIndex(a, k)] = true
		if shardIndex(a, k) != shardIndex(b, k) {
			sameAll = false
		}
	}
	for i, u := range used {
		if !u {
			t.Errorf("keys that collide unkeyed leave shard %d empty", i)
		}
	}
	if sameAll {
		t.Error("two caches place every key in the same shard: the seed is not per cache")
	}

	c := newCache(shards) // room for 2 keys per shard
	took := 0
	for _, k := range keys {
		if c.Add(k, 100, 0) == nil {
			took++
		}
	}
	if room := shards * c.shards[0].max; took != room {
		t.Errorf("colliding keys took %d slots of %d (unkeyed: %d)", took, room, c.shards[0].max)
	}
}

func shardIndex(c *Cache[key], k key) int {
	for i := range c.shards {
		if c.shardOf(k) == &c.shards[i] {
			return i
		}
	}
	return -1
}

// TestSealRestore: Seal returns every live key and makes Add fail (a
// replay still says replayed); a new cache restored from those entries
// refuses each of them and takes new keys.
func TestSealRestore(t *testing.T) {
	sec := int64(time.Second)
	c := newCache(1024)
	for i := range 100 {
		k := key{byte(i), 1}
		if err := c.Add(k, int64(10+i)*sec, 0); err != nil {
			t.Fatal(err)
		}
	}
	entries := c.Seal(50 * sec) // keys 0..40 have lapsed
	if len(entries) != 59 {
		t.Fatalf("Seal returned %d entries, want the 59 live ones", len(entries))
	}
	if err := c.Add(key{200}, 100*sec, 50*sec); err != ErrSealed {
		t.Errorf("Add after Seal: %v, want ErrSealed", err)
	}
	if err := c.Add(key{99, 1}, 200*sec, 50*sec); err != errReplayed {
		t.Errorf("a replay after Seal: %v, want the replayed error", err)
	}

	n := newCache(1024)
	for _, e := range entries {
		if !n.Restore(e.Key, e.ForgetAt, 51*sec) {
			t.Fatalf("no room to restore %v", e)
		}
	}
	if !n.Restore(key{250}, 10*sec, 51*sec) || n.Len() != 58 {
		t.Errorf("a lapsed entry was restored, or entries lost: Len = %d, want 58", n.Len())
	}
	for i := 42; i < 100; i++ {
		if err := n.Add(key{byte(i), 1}, 300*sec, 51*sec); err != errReplayed {
			t.Errorf("restored key %d: Add = %v, want the replayed error", i, err)
		}
	}
	if err := n.Add(key{201}, 100*sec, 51*sec); err != nil {
		t.Errorf("a new key after restore: %v", err)
	}
	// A full shard makes Restore report it.
	small := newCache(shards)
	ks := keysInShard(small, 3)
	ok := small.Restore(ks[0], 100, 0) && small.Restore(ks[1], 100, 0)
	if ok && small.Restore(ks[2], 100, 0) {
		t.Error("Restore into a full shard reported room")
	}
}

// TestAddAllocs: recording and refusing keys allocates nothing while the
// cache has room.
func TestAddAllocs(t *testing.T) {
	c := newCache(1 << 12)
	var k key
	i := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		binary.LittleEndian.PutUint64(k[:8], i)
		_ = c.Add(k, 100, 0)
		_ = c.Add(k, 100, 0) // refused
	})
	if allocs != 0 {
		t.Errorf("Add allocates %v times per call", allocs)
	}
}

// BenchmarkNew: what one cache of the default bound (65536 keys) costs to
// make, by key size (B/op; bench/RESULTS.md).
func BenchmarkNew(b *testing.B) {
	b.Run("spa nonce 16B", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = New[[16]byte](65536, errReplayed, errFull)
		}
	})
	b.Run("fwknop digest 32B", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = New[[32]byte](65536, errReplayed, errFull)
		}
	})
}
