package tracker

import (
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// refLRU is the obvious reference: a slice ordered most recent first.
type refLRU struct {
	cap  int
	keys []netip.Addr
	vals map[netip.Addr]progress
}

func (r *refLRU) add(k netip.Addr, p progress) (victim netip.Addr, victimVal progress, evicted bool) {
	if i := slices.Index(r.keys, k); i >= 0 {
		r.keys = slices.Delete(r.keys, i, i+1)
	} else if len(r.keys) == r.cap {
		victim = r.keys[len(r.keys)-1]
		victimVal = r.vals[victim]
		delete(r.vals, victim)
		r.keys = r.keys[:len(r.keys)-1]
		evicted = true
	}
	r.keys = slices.Insert(r.keys, 0, k)
	r.vals[k] = p
	return victim, victimVal, evicted
}

func (r *refLRU) remove(k netip.Addr) {
	if i := slices.Index(r.keys, k); i >= 0 {
		r.keys = slices.Delete(r.keys, i, i+1)
		delete(r.vals, k)
	}
}

// TestPendingTableModel runs random operations against the table and the
// reference and compares every answer, including which source is evicted.
func TestPendingTableModel(t *testing.T) {
	for _, tt := range []struct {
		name     string
		capacity int
		keySpace int
		ops      int
		v6       bool
	}{
		{"tiny", 1, 4, 2000, false},
		{"small, heavy churn", 8, 40, 20000, false},
		{"medium", 100, 300, 50000, true},
		{"keys fit", 64, 64, 20000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tt.capacity)))
			tb := newTable[progress](tt.capacity, maphash.MakeSeed())
			ref := &refLRU{cap: tt.capacity, vals: map[netip.Addr]progress{}}
			key := func() netip.Addr {
				i := rng.IntN(tt.keySpace)
				if tt.v6 && i%2 == 0 {
					return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x77, 14: byte(i >> 8), 15: byte(i)})
				}
				return netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)})
			}
			for op := range tt.ops {
				k := key()
				switch rng.IntN(4) {
				case 0, 1:
					p := progress{at: int64(op), last: uint32(op), svc: uint8(op % 7), next: uint8(op % 5)}
					gk, gv, got := tb.Add(k, p)
					wk, wv, want := ref.add(k, p)
					if got != want || got && (netip.AddrFrom16(gk).Unmap() != wk.Unmap() || gv != wv) {
						t.Fatalf("op %d Add(%v) evicted %v (%v, %+v), want %v (%v, %+v)", op, k, got, netip.AddrFrom16(gk), gv, want, wk, wv)
					}
				case 2:
					tb.Remove(k)
					ref.remove(k)
				case 3:
					got, ok := tb.Peek(k)
					want, wok := ref.vals[k]
					if ok != wok || got != want {
						t.Fatalf("op %d Peek(%v) = %+v,%v want %+v,%v", op, k, got, ok, want, wok)
					}
				}
				if tb.Len() != len(ref.keys) {
					t.Fatalf("op %d Len = %d, want %d", op, tb.Len(), len(ref.keys))
				}
			}
			// Recency order matches the reference, most recent first.
			var order []netip.Addr
			for s := tb.head; s >= 0; s = tb.slots[s].next {
				order = append(order, netip.AddrFrom16(tb.slots[s].key).Unmap())
			}
			for i := range ref.keys {
				ref.keys[i] = ref.keys[i].Unmap()
			}
			if !slices.Equal(order, ref.keys) {
				t.Fatalf("recency order differs:\n got %v\nwant %v", order, ref.keys)
			}
		})
	}
}

// TestPendingTableNoAllocs: inserting new sources into a full table, which is
// what a spoofed flood does, allocates nothing.
func TestPendingTableNoAllocs(t *testing.T) {
	tb := newTable[progress](1024, maphash.MakeSeed())
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		i++
		tb.Add(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), progress{at: int64(i)})
	})
	if allocs != 0 {
		t.Fatalf("Add of new sources allocates %v per call, want 0", allocs)
	}
	if tb.Len() != 1024 {
		t.Fatalf("Len = %d, want 1024", tb.Len())
	}
}

// TestPendingTableClear: Clear forgets every source, allocates nothing, and
// leaves a table that fills again to its capacity like a new one.
func TestPendingTableClear(t *testing.T) {
	tb := newTable[progress](64, maphash.MakeSeed())
	add := func(n int) {
		for i := range n {
			tb.Add(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), progress{at: int64(i)})
		}
	}
	add(100)
	if allocs := testing.AllocsPerRun(10, tb.Clear); allocs != 0 {
		t.Errorf("Clear allocates %v times, want 0", allocs)
	}
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after Clear", tb.Len())
	}
	if _, ok := tb.Peek(netip.AddrFrom4([4]byte{10, 1, 0, 99})); ok {
		t.Error("a source is still there after Clear")
	}
	add(100)
	if tb.Len() != 64 {
		t.Errorf("Len = %d after refilling, want the capacity 64", tb.Len())
	}
	for i := 36; i < 100; i++ {
		if _, ok := tb.Peek(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})); !ok {
			t.Fatalf("source %d (among the 64 most recent) missing after refilling", i)
		}
	}
}
