package tracker_test

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/knockwall/knockwall/tracker"
)

// refGrant is one live grant of the rooms' reference model.
type refGrant struct {
	how      tracker.Method
	plain    bool
	ends     time.Time // open_for, or firstBy while awaiting
	exp      time.Time // open_for
	awaiting bool
}

// refRooms is the obvious reference for the grant table's rooms: a map of
// live grants, and the rules said plainly. A grant of a plain sequence
// (MethodSequence of a service with a room) needs a place in its service's
// room and in the table; every other grant needs a place in the table only;
// a plain grant never replaces a live grant made another way; a plain grant
// ends at its first-connect deadline unless admitted before, or unless it
// renews a live plain grant that was.
type refRooms struct {
	max   int
	rooms map[uint64]tracker.Room
	live  map[[2]any]*refGrant // (source, id)
}

func (r *refRooms) expire(now time.Time) {
	for k, g := range r.live {
		if !g.ends.After(now) {
			delete(r.live, k)
		}
	}
}

func (r *refRooms) count(plainID uint64) (all, plain int) {
	for k, g := range r.live {
		all++
		if g.plain && k[1].(uint64) == plainID {
			plain++
		}
	}
	return all, plain
}

func (r *refRooms) grant(src netip.Addr, id uint64, how tracker.Method, openFor time.Duration, now time.Time) bool {
	r.expire(now)
	room, plain := r.rooms[id]
	plain = plain && how == tracker.MethodSequence
	ng := &refGrant{how: how, plain: plain, exp: now.Add(openFor), ends: now.Add(openFor)}
	if plain {
		ng.awaiting = true
		ng.ends = now.Add(min(openFor, room.FirstConnect))
	}
	k := [2]any{src, id}
	if old, ok := r.live[k]; ok {
		if plain && !old.plain {
			return true
		}
		if plain && !old.awaiting {
			ng.awaiting, ng.ends = false, ng.exp // renewed by a source that has connected
		}
		r.live[k] = ng
		return true
	}
	all, inRoom := r.count(id)
	if all >= r.max || plain && inRoom >= room.Max {
		return false
	}
	r.live[k] = ng
	return true
}

func (r *refRooms) admit(src netip.Addr, ids []uint64, now time.Time) tracker.Admission {
	r.expire(now)
	for _, id := range ids {
		if g, ok := r.live[[2]any{src, id}]; ok {
			a := tracker.Admission{OK: true, ID: id, First: g.awaiting}
			g.awaiting, g.ends = false, g.exp
			return a
		}
	}
	return tracker.Admission{}
}

// TestGrantRoomsModel runs random grants of every method, admissions,
// revocations and expiries against the tracker and the reference, and
// compares every answer and the live grants after each step. Time moves by
// at least the tracker's purge interval per step, so a full table is always
// swept of lapsed grants before it refuses one.
func TestGrantRoomsModel(t *testing.T) {
	const (
		plainA, plainB, spaOnly = 1, 2, 3
		maxGrants               = 10
	)
	rooms := map[uint64]tracker.Room{
		plainA: {Max: 3, FirstConnect: 2 * time.Second},
		plainB: {Max: 2, FirstConnect: 4 * time.Second},
	}
	reserved := maxGrants - rooms[plainA].Max - rooms[plainB].Max
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 16))
		tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: maxGrants})
		if err != nil {
			t.Fatal(err)
		}
		tr.SetRooms(rooms)
		ref := &refRooms{max: maxGrants, rooms: rooms, live: map[[2]any]*refGrant{}}
		srcs := make([]netip.Addr, 14)
		for i := range srcs {
			srcs[i] = netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)})
		}
		ids := []uint64{plainA, plainB, spaOnly}
		methods := []tracker.Method{tracker.MethodSequence, tracker.MethodSequence, tracker.MethodSPA, tracker.MethodFwknop, tracker.MethodManual, tracker.MethodRotating}
		now := t0
		for op := range 3000 {
			now = now.Add(100*time.Millisecond + time.Duration(rng.IntN(900))*time.Millisecond)
			src := srcs[rng.IntN(len(srcs))]
			id := ids[rng.IntN(len(ids))]
			switch rng.IntN(6) {
			case 0, 1, 2:
				how := methods[rng.IntN(len(methods))]
				open := time.Duration(1+rng.IntN(12)) * time.Second
				want := ref.grant(src, id, how, open, now)
				got := tr.Grant(src, id, now, open, 0, how)
				if got != want {
					t.Fatalf("seed %d op %d: Grant(%v, %d, %v) = %v, want %v", seed, op, src, id, how, got, want)
				}
				if !got && how != tracker.MethodSequence {
					// The room kept for grants a spoofer cannot make: only
					// such grants themselves can have filled it.
					strong := 0
					for _, g := range ref.live {
						if !g.plain {
							strong++
						}
					}
					if strong < reserved {
						t.Fatalf("seed %d op %d: a %v grant refused with %d strong grants live, fewer than the %d kept for them", seed, op, how, strong, reserved)
					}
				}
			case 3, 4:
				want := ref.admit(src, ids, now)
				if got := tr.Admit(src, ids, 40000, now); got != want {
					t.Fatalf("seed %d op %d: Admit(%v) = %+v, want %+v", seed, op, src, got, want)
				}
			case 5:
				if rng.IntN(2) == 0 {
					tr.Revoke(src, 0)
					for _, id := range ids {
						delete(ref.live, [2]any{src, id})
					}
				} else {
					tr.Expire(now)
				}
			}
			compareLive(t, tr, ref, now, seed, op)
		}
	}
}

func compareLive(t *testing.T, tr *tracker.Tracker, ref *refRooms, now time.Time, seed uint64, op int) {
	t.Helper()
	ref.expire(now)
	var want []tracker.GrantInfo
	for k, g := range ref.live {
		want = append(want, tracker.GrantInfo{Src: k[0].(netip.Addr), ID: k[1].(uint64), Expires: g.ends, How: g.how, Awaiting: g.awaiting})
	}
	slices.SortFunc(want, func(a, b tracker.GrantInfo) int {
		if c := a.Src.Compare(b.Src); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	got := tr.Grants(now)
	if len(got) != len(want) {
		t.Fatalf("seed %d op %d: %d live grants, want %d:\n got %+v\nwant %+v", seed, op, len(got), len(want), got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Src != w.Src || g.ID != w.ID || g.How != w.How || g.Awaiting != w.Awaiting || !g.Expires.Equal(w.Expires) {
			t.Fatalf("seed %d op %d: grant %d is %+v, want %+v", seed, op, i, g, w)
		}
	}
}

// TestPlainGrantsNeverTakeTheStrongRoom: a flood of plain-sequence grants
// from as many sources as the table holds fills each plain service's room
// and no more; SPA, fwknop, rotating and operator grants still get the rest,
// and the flood's grants that open no connection free their room at the
// first-connect deadline.
func TestPlainGrantsNeverTakeTheStrongRoom(t *testing.T) {
	tr, err := tracker.New(tracker.Config{MaxPending: 1024, MaxGrants: 40})
	if err != nil {
		t.Fatal(err)
	}
	const plain, strong = 1, 2
	tr.SetRooms(map[uint64]tracker.Room{plain: {Max: 20, FirstConnect: 10 * time.Second}})
	granted := 0
	for i := range 100 {
		if tr.Grant(netip.AddrFrom4([4]byte{10, 66, 0, byte(i)}), plain, t0, time.Minute, 0, tracker.MethodSequence) {
			granted++
		}
	}
	if granted != 20 {
		t.Fatalf("%d plain grants, want the room's 20", granted)
	}
	owner := netip.MustParseAddr("10.1.1.1")
	for i, how := range []tracker.Method{tracker.MethodSPA, tracker.MethodFwknop, tracker.MethodRotating} {
		if !tr.Grant(netip.AddrFrom4([4]byte{10, 1, 1, byte(i + 1)}), strong, t0, time.Minute, 0, how) {
			t.Errorf("a %v grant refused beside a full plain room", how)
		}
	}
	if !tr.Put(tracker.GrantInfo{Src: owner, ID: plain, Expires: t0.Add(time.Minute), How: tracker.MethodManual}, t0) {
		t.Error("an operator's grant of the plain service refused")
	}
	// A plain grant never cuts short the owner's own stronger grant.
	if !tr.Grant(owner, plain, t0, time.Minute, 0, tracker.MethodSequence) {
		t.Error("a plain grant over the owner's grant refused")
	}
	if got, ok := tr.Expiry(owner, plain, t0.Add(30*time.Second)); !ok || !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("the owner's grant now ends at %v (%v), want its own end", got, ok)
	}
	// The flood's grants open no connection: at the deadline their room
	// is free again.
	later := t0.Add(10 * time.Second)
	if !tr.Grant(netip.MustParseAddr("10.2.2.2"), plain, later, time.Minute, 0, tracker.MethodSequence) {
		t.Error("the plain room still full after its grants' first-connect deadline")
	}
}

// TestOneShotRetransmitWindow: a SYN from the last connection's source port
// is its retransmission only within SYNRetransmitWindow; after that it is a
// new connection, refused when none is left.
func TestOneShotRetransmitWindow(t *testing.T) {
	tr := newTracker(t, 16, 16)
	src := netip.MustParseAddr("10.0.0.5")
	const id = 7
	if !tr.Grant(src, id, t0, time.Minute, 1, tracker.MethodSPA) {
		t.Fatal("grant refused")
	}
	w := tracker.SYNRetransmitWindow
	for _, s := range []struct {
		at   time.Duration
		want bool
		why  string
	}{
		{0, true, "the one connection"},
		{time.Second, true, "its first retransmission"},
		{w, true, "the end of the window"},
		{w + time.Millisecond, false, "the same port after the window: a new connection, none left"},
		{w + time.Second, false, "and later still"},
	} {
		if got := tr.Granted(src, []uint64{id}, 40000, t0.Add(s.at)); got != s.want {
			t.Errorf("at %v (%s): Granted = %v, want %v", s.at, s.why, got, s.want)
		}
	}
}
