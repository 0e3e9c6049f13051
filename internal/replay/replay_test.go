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

func newCache(max int) *Cache[key] {
	return New(max, func(k key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }, errReplayed, errFull)
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
	var same key // same first 8 bytes → same shard as each other
	same[0] = 7
	added := 0
	var full error
	for i := range 64 {
		same[15] = byte(i)
		if err := c.Add(same, 100*sec, 12*sec); err != nil {
			full = err
			break
		}
		added++
	}
	if full != errFull {
		t.Fatalf("filling a shard: err = %v after %d adds, want the full error", full, added)
	}
	same[15] = 0
	if err := c.Add(same, 100*sec, 13*sec); err != errReplayed {
		t.Fatalf("a remembered key was forgotten when full: err = %v", err)
	}
	same[15] = 200
	if err := c.Add(same, 200*sec, 101*sec); err != nil {
		t.Fatalf("after the live keys expired: err = %v", err)
	}
	c.Purge(1000 * sec)
	if c.Len() != 0 {
		t.Fatalf("Len after purge = %d", c.Len())
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
