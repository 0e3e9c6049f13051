package tracker

import (
	"hash/maphash"
	"net/netip"
)

// table is a fixed-capacity LRU map from source address to a small value
// (knock progress, a rate-limit bucket). Pending progress is what a flood of spoofed sources churns, so it
// must cost nothing per new source: every slot is allocated up front, the
// index is open addressing with linear probing and backward-shift deletion (no
// tombstones to rebuild), and nothing in it holds a pointer, so the garbage
// collector never scans it. About 48 bytes per source.
// V must hold no pointers. Keys are the 16-byte form of the address, so an
// IPv4 source and its IPv4-mapped IPv6 form share an entry; they never
// meet, since verdict drops IPv6 packets from an IPv4-mapped source as
// malformed before the tracker sees them. Grants, which open ports, keep
// the two apart anyway (grantKey.v4).
type table[V any] struct {
	slots []slot[V]
	index []int32 // slot number, or -1; len is a power of two ≥ 2×cap
	mask  uint32
	seed  maphash.Seed
	head  int32 // most recently used, or -1
	tail  int32 // least recently used, or -1
	free  int32 // first free slot (linked by next), or -1
	n     int
}

type slot[V any] struct {
	key        [16]byte
	p          V
	prev, next int32
}

func newTable[V any](capacity int, seed maphash.Seed) *table[V] {
	size := 1
	for size < 2*capacity {
		size <<= 1
	}
	t := &table[V]{
		slots: make([]slot[V], capacity),
		index: make([]int32, size),
		mask:  uint32(size - 1),
		seed:  seed,
	}
	t.Clear()
	return t
}

// Clear forgets every source, in place: it allocates nothing.
func (t *table[V]) Clear() {
	for i := range t.index {
		t.index[i] = -1
	}
	for i := range t.slots {
		t.slots[i] = slot[V]{next: int32(i + 1)}
	}
	t.slots[len(t.slots)-1].next = -1
	t.free, t.head, t.tail, t.n = 0, -1, -1, 0
}

func (t *table[V]) hash(k *[16]byte) uint32 {
	return uint32(mix(k, t.seed))
}

// find returns the index position holding k, or -1.
func (t *table[V]) find(k *[16]byte) int32 {
	for i := t.hash(k) & t.mask; ; i = (i + 1) & t.mask {
		s := t.index[i]
		if s < 0 {
			return -1
		}
		if t.slots[s].key == *k {
			return int32(i)
		}
	}
}

// Len is the number of sources held.
func (t *table[V]) Len() int { return t.n }

// Peek returns src's value without touching its recency.
func (t *table[V]) Peek(src netip.Addr) (V, bool) {
	k := src.As16()
	pos := t.find(&k)
	if pos < 0 {
		var zero V
		return zero, false
	}
	return t.slots[t.index[pos]].p, true
}

// Add sets src's value and makes it the most recent. When the least recent
// source was evicted to make room, it returns that source's key and value,
// and evicted true.
func (t *table[V]) Add(src netip.Addr, p V) (victim [16]byte, victimVal V, evicted bool) {
	k := src.As16()
	if pos := t.find(&k); pos >= 0 {
		s := t.index[pos]
		t.slots[s].p = p
		t.unlink(s)
		t.pushFront(s)
		return victim, victimVal, false
	}
	if t.free < 0 {
		victim, victimVal, evicted = t.slots[t.tail].key, t.slots[t.tail].p, true
		t.removeSlot(t.tail)
	}
	s := t.free
	t.free = t.slots[s].next
	t.slots[s].key = k
	t.slots[s].p = p
	t.pushFront(s)
	for i := t.hash(&k) & t.mask; ; i = (i + 1) & t.mask {
		if t.index[i] < 0 {
			t.index[i] = s
			break
		}
	}
	t.n++
	return victim, victimVal, evicted
}

// Remove forgets src.
func (t *table[V]) Remove(src netip.Addr) {
	k := src.As16()
	if pos := t.find(&k); pos >= 0 {
		t.removeSlot(t.index[pos])
	}
}

func (t *table[V]) removeSlot(s int32) {
	pos := uint32(t.find(&t.slots[s].key))
	// Backward-shift deletion: pull later entries of the probe run into
	// the hole so that lookups never need tombstones.
	t.index[pos] = -1
	for j := (pos + 1) & t.mask; t.index[j] >= 0; j = (j + 1) & t.mask {
		ideal := t.hash(&t.slots[t.index[j]].key) & t.mask
		// Move entry j into the hole unless its ideal position lies
		// cyclically in (pos, j].
		if (j-ideal)&t.mask >= (j-pos)&t.mask {
			t.index[pos] = t.index[j]
			t.index[j] = -1
			pos = j
		}
	}
	t.unlink(s)
	t.slots[s] = slot[V]{next: t.free}
	t.free = s
	t.n--
}

func (t *table[V]) unlink(s int32) {
	sl := &t.slots[s]
	if sl.prev >= 0 {
		t.slots[sl.prev].next = sl.next
	} else {
		t.head = sl.next
	}
	if sl.next >= 0 {
		t.slots[sl.next].prev = sl.prev
	} else {
		t.tail = sl.prev
	}
}

func (t *table[V]) pushFront(s int32) {
	sl := &t.slots[s]
	sl.prev = -1
	sl.next = t.head
	if t.head >= 0 {
		t.slots[t.head].prev = s
	}
	t.head = s
	if t.tail < 0 {
		t.tail = s
	}
}

// each calls fn for every entry, most recently used first.
func (t *table[V]) each(fn func(v *V)) {
	for s := t.head; s >= 0; s = t.slots[s].next {
		fn(&t.slots[s].p)
	}
}
