// Package tracker keeps knockwall's per-source state: how far a source has
// come through a knock sequence, and which grants it holds. It knows nothing
// of packets; it is told "source S sent knock K at time T" and asked "does S
// hold a grant for one of these services at T".
//
// Pending progress lives in a bounded LRU table and grants in a separate,
// bounded table that never evicts, so a flood of spoofed, unauthenticated
// sources can only ever evict pending progress, never a grant. Both are
// sharded by source under a per-shard mutex, so two queue workers rarely
// contend. Time is always passed in by the caller.
package tracker

import (
	"errors"
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Sequences describes the knock sequences the tracker follows. Knocks are
// opaque uint32 keys; *rules.Set implements this interface.
type Sequences interface {
	// Begins reports the service whose sequence starts with knock k.
	Begins(k uint32) (svc int, ok bool)
	// Len is the number of knocks in service svc's sequence.
	Len(svc int) int
	// Step is knock i of service svc's sequence.
	Step(svc, i int) uint32
	// StepTimeout is the longest gap allowed between two knocks of svc.
	StepTimeout(svc int) time.Duration
	// OpenFor is how long a grant of svc lasts.
	OpenFor(svc int) time.Duration
	// Connections is how many new connections a grant of svc lets in
	// (0: any number until it expires).
	Connections(svc int) int
	// GrantFor is the id of the service a completed sequence svc grants.
	// Sequence ids may name variants of one service (a rotating sequence
	// of this period and of the last); grants are kept per service id, which
	// must stay the same for the same service across reloads.
	GrantFor(svc int) uint64
	// Gen names the configuration the sequence ids belong to: after a
	// reload the same sequence id may mean another sequence, or none.
	Gen() uint16
	// Remap translates sequence id svc of configuration gen into this
	// one, when that sequence is still the same; ok false drops the
	// progress recorded under gen.
	Remap(gen uint16, svc int) (int, bool)
	// Keyed reports whether sequence svc is derived from a key (a
	// rotating sequence): its grants are MethodRotating, which only a
	// holder of the key can make, and take no plain-sequence room.
	Keyed(svc int) bool
}

// Event says what a knock did to a source's state.
type Event uint8

// Events.
const (
	EventNone         Event = iota // not a knock, and no progress to lose
	EventReset                     // progress dropped: wrong knock, or too late
	EventStep                      // a knock advanced (or began) a sequence
	EventRepeat                    // a retransmission of the last knock; ignored
	EventGrant                     // a sequence completed; the grant is recorded
	EventGrantRefused              // a sequence completed but the grant table is full of live grants

	// NumEvents is the number of events, for arrays indexed by Event.
	NumEvents = iota
)

var eventNames = [...]string{"none", "reset", "step", "repeat", "grant", "grant-refused"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return "unknown"
}

// Outcome is the result of Observe.
type Outcome struct {
	Event Event
	Svc   int // the sequence concerned (see Sequences.GrantFor), for every event but None
	Done  int // knocks of the sequence completed after this one
}

// Config bounds the tracker.
type Config struct {
	MaxPending int // sources with knock progress
	MaxGrants  int // (source, service) grants, in all
	// KnockRate is the knock attempts per second one source may make, and
	// KnockBurst how many it may make at once; KnockRate 0 means no limit.
	// The buckets live in a table bounded like the pending one (see Allow).
	KnockRate  float64
	KnockBurst int
}

// ErrBadConfig is returned by New for non-positive bounds.
var ErrBadConfig = errors.New("tracker: bounds must be positive")

// ErrGrantTableFull says a grant was refused because the grant table is full
// of live grants.
var ErrGrantTableFull = errors.New("tracker: grant table full of live grants")

// Tracker is safe for concurrent use.
type Tracker struct {
	shards []shard
	mask   uint64
	seed   maphash.Seed
	// epoch is the reference all stored times count from. Times are kept
	// as now.Sub(epoch), which uses the monotonic clock when both carry a
	// reading (as time.Now() values do), so a wall clock step (NTP on a
	// router that booted in 1970) neither stretches nor cuts a grant.
	epoch time.Time

	// knockCost is the token-bucket price of one knock attempt, knockMax
	// the bucket's size and knockNew what a new bucket holds, all in
	// nanoseconds of budget (wireguard-go's ratelimiter does the same), so
	// a bucket refills by one nanosecond per nanosecond. A /48's bucket
	// has the same size and the same start but charges knockCost /
	// Prefix48Hosts per knock.
	knockCost, knockMax, knockNew int64

	maxGrants int64
	grants    atomic.Int64 // grants held in all shards
	// rooms bounds the grants of plain sequences, by service id (see
	// SetRooms); plain counts them, under roomMu, which is taken inside a
	// shard's lock and never the other way round.
	rooms     atomic.Pointer[map[uint64]Room]
	roomMu    sync.Mutex
	plain     map[uint64]int
	lastPurge atomic.Int64 // when a full table was last swept, on the tracker's clock

	evictedPending atomic.Uint64
	refusedGrants  atomic.Uint64
	limited        atomic.Uint64
	exhausted      atomic.Uint64
}

// bucket is one source's knock budget.
type bucket struct {
	tokens int64 // nanoseconds of budget
	last   int64 // when tokens was computed, on the tracker's clock
}

type shard struct {
	mu      sync.Mutex
	pending *table[progress]
	limits  *table[bucket] // nil without a knock rate
	// debts remembers the debts of knock-rate buckets evicted from limits
	// (see Allow), until refilling would have repaid them. A key may use
	// two cells, picked by its keyed hash, and reads only a cell that
	// carries that hash: another key's debt never reaches it. A debt that
	// finds both cells holding others' debts replaces the smaller of the
	// two, counted in knocks of its kind, if that is smaller than its own,
	// and is otherwise forgotten: what is lost is always the smallest debt
	// at hand. Nil without a knock rate.
	debts    []debt
	debtMask uint64
	debtSeed maphash.Seed
	// grants maps (source, service id) to the grant. It never
	// evicts (a full table refuses newcomers), so it needs no recency
	// order: a map, whose keys hold no pointer, so the collector does not
	// scan it, and which reuses the room of lapsed grants: it allocates
	// when it grows, and now and then when it rehashes away the tombstones
	// of deletions (verdict.TestNewGrantsAllocs bounds it). Each shard could hold every grant; the tracker-wide count
	// enforces MaxGrants.
	grants map[grantKey]grant
	// lapsed holds grants purged to make room, until Expire reports them.
	lapsed []Expired
	// npending mirrors pending.Len() for a look without the lock: a
	// packet that begins no sequence changes nothing in a shard where no
	// source has progress.
	npending atomic.Int32
	_        [64]byte // keep neighbouring shards' locks off one cache line
}

// debt is one cell of shard.debts: the key with hash h owes budget until at,
// on the tracker's clock. A cell whose at has passed is free. The low bit of
// h says the key is a /48's (prefix48Bit), whose knocks cost 1/Prefix48Hosts
// of a host's.
type debt struct {
	h  uint64
	at int64
}

// prefix48Bit marks a /48 key's hash in shard.debts.
const prefix48Bit = 1

// weight is how many of its own knocks one host knock's worth of budget is
// for the key of a debt with hash h: debts are compared in knocks.
func weight(h uint64) int64 {
	if h&prefix48Bit != 0 {
		return Prefix48Hosts
	}
	return 1
}

// progress is one source's way through one sequence.
type progress struct {
	at   int64  // the last accepted knock, on the tracker's clock
	last uint32 // the last accepted knock, to recognise its retransmission
	gen  uint16 // Sequences.Gen when recorded
	svc  uint8  // sequence id (rules.MaxServices and the rotating variants fit)
	next uint8  // index of the knock expected next
}

// Method says how a grant was made.
type Method uint8

// Methods.
const (
	MethodSequence Method = iota + 1 // a knock sequence (fixed or rotating)
	MethodSPA                        // a single-packet authorization token
	MethodManual                     // an operator (knockwall grant)
	MethodFwknop                     // a packet of the stock fwknop client
	MethodRotating                   // a rotating sequence, derived from a key

	// NumMethods bounds Method, for arrays indexed by Method.
	NumMethods = int(MethodRotating) + 1
)

var methodNames = [...]string{"", "sequence", "spa", "manual", "fwknop", "rotating"}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return "unknown"
}

// ParseMethod is the inverse of Method.String.
func ParseMethod(s string) (Method, bool) {
	for i, n := range methodNames {
		if i > 0 && n == s {
			return Method(i), true
		}
	}
	return 0, false
}

// grant is one (source, service) grant. It holds no pointer.
type grant struct {
	exp int64 // when it ends, on the tracker's clock
	// firstBy, when not 0, is when a grant of a plain sequence that has
	// let in no connection yet ends (Room.FirstConnect); its first
	// connection clears it.
	firstBy int64
	// lastAt is when the last connection of a one-shot grant was let in.
	lastAt int64
	// limited: a one-shot grant (services.NAME.connections), which lets
	// in left more new connections. lastPort is the source port of the
	// last connection let in: a SYN from that port again within
	// SYNRetransmitWindow of lastAt is its retransmission, not a new
	// connection.
	limited  bool
	left     uint16
	lastPort uint16
	how      Method
	// plain: the grant takes room of its service's plain-sequence room.
	plain bool
}

// ends is when g stops letting anything in.
func (g *grant) ends() int64 {
	if g.firstBy != 0 {
		return min(g.exp, g.firstBy)
	}
	return g.exp
}

type grantKey struct {
	src [16]byte // netip.Addr.As16
	id  uint64   // service id
	v4  bool     // an IPv4 source: not the same as its IPv4-mapped IPv6 form
}

func keyOf(src netip.Addr, id uint64) grantKey {
	return grantKey{src: src.As16(), id: id, v4: src.Is4()}
}

// addr is the key's source.
func (k grantKey) addr() netip.Addr {
	if a := netip.AddrFrom16(k.src); !k.v4 {
		return a
	}
	return netip.AddrFrom4([4]byte(k.src[12:]))
}

// New returns a tracker bounded by c.
func New(c Config) (*Tracker, error) {
	if c.MaxPending < 1 || c.MaxGrants < 1 || c.KnockRate < 0 || (c.KnockRate > 0 && c.KnockBurst < 1) {
		return nil, ErrBadConfig
	}
	n := defaultShards
	for n > 1 && (n > c.MaxPending || n > c.MaxGrants) {
		n /= 2
	}
	t := &Tracker{shards: make([]shard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), epoch: time.Now(), maxGrants: int64(c.MaxGrants)}
	t.lastPurge.Store(math.MinInt64 / 2) // a sweep may run at once
	if c.KnockRate > 0 {
		t.knockCost = int64(float64(time.Second) / c.KnockRate)
		t.knockMax = t.knockCost * int64(c.KnockBurst)
		t.knockNew = t.knockCost * int64(min(c.KnockBurst, NewBucketKnocks))
	}
	for i := range t.shards {
		s := &t.shards[i]
		per := ceilDiv(c.MaxPending, n)
		s.pending = newTable[progress](per, maphash.MakeSeed())
		if c.KnockRate > 0 {
			s.limits = newTable[bucket](per, maphash.MakeSeed())
			cells := 1
			for cells < debtCellsPerSlot*per {
				cells <<= 1
			}
			s.debts = make([]debt, cells)
			for j := range s.debts {
				s.debts[j].at = math.MinInt64 / 2 // free, whatever the clock's epoch
			}
			s.debtMask = uint64(cells - 1)
			s.debtSeed = maphash.MakeSeed()
		}
		s.grants = make(map[grantKey]grant)
	}
	t.plain = map[uint64]int{}
	return t, nil
}

// mix hashes a 16-byte address under a random per-process key (hash/maphash,
// a keyed hash), so an attacker who does not know the key cannot pick
// addresses that collide in one shard or one probe chain. An unkeyed mix
// with the seed added afterwards would not do: addresses that collide before
// the seed collide under every seed.
func mix(k *[16]byte, seed maphash.Seed) uint64 { return maphash.Bytes(seed, k[:]) }

// since converts a caller's time to the tracker's clock.
func (t *Tracker) since(now time.Time) int64 { return int64(now.Sub(t.epoch)) }

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// shardOf picks src's shard with a seeded mix, so an attacker cannot aim
// spoofed sources at one shard.
func (t *Tracker) shardOf(src netip.Addr) *shard {
	if t.mask == 0 {
		return &t.shards[0]
	}
	b := src.As16()
	// The top bits pick the shard; each shard's table indexes by the low
	// bits of a differently seeded mix.
	return &t.shards[mix(&b, t.seed)>>58&t.mask]
}

// Observe records that src sent knock k at now, and says what that did. Every
// packet knockwall sees from a source should be observed, knock port or not:
// anything that is not the source's next knock resets its progress, so an
// ascending port scan never completes an ascending sequence.
func (t *Tracker) Observe(src netip.Addr, k uint32, now time.Time, seqs Sequences) Outcome {
	s := t.shardOf(src)
	if s.npending.Load() == 0 {
		// Most packets of a flood to unrelated ports: nothing to reset.
		// A concurrent first knock from src on another queue is as
		// unordered against this packet with the lock as without.
		if _, ok := seqs.Begins(k); !ok {
			return Outcome{Event: EventNone}
		}
	}
	ts := t.since(now)
	s.mu.Lock()
	defer s.unlockObserved()

	out := Outcome{Event: EventNone}
	p, ok := s.pending.Peek(src)
	if ok && p.gen != seqs.Gen() {
		// Recorded under another configuration: keep it only if its
		// sequence is still there unchanged.
		if svc, same := seqs.Remap(p.gen, int(p.svc)); same {
			p.svc, p.gen = uint8(svc), seqs.Gen()
			s.pending.Add(src, p)
		} else {
			s.pending.Remove(src)
			ok = false
		}
	}
	if ok {
		svc := int(p.svc)
		switch {
		case ts-p.at > int64(seqs.StepTimeout(svc)):
			// Too late: the old progress is worth nothing. The knock may
			// still begin a sequence below.
			s.pending.Remove(src)
			out = Outcome{Event: EventReset, Svc: svc, Done: 0}
		case k == seqs.Step(svc, int(p.next)):
			if int(p.next)+1 == seqs.Len(svc) {
				s.pending.Remove(src)
				return t.grantLocked(s, src, svc, ts, seqs)
			}
			p.next++
			p.last = k
			p.at = ts
			s.pending.Add(src, p)
			return Outcome{Event: EventStep, Svc: svc, Done: int(p.next)}
		case k == p.last:
			// A retransmitted SYN or duplicated datagram of the knock just
			// accepted. The window is not extended.
			return Outcome{Event: EventRepeat, Svc: svc, Done: int(p.next)}
		default:
			s.pending.Remove(src)
			out = Outcome{Event: EventReset, Svc: svc, Done: 0}
		}
	}
	svc, ok := seqs.Begins(k)
	if !ok {
		return out
	}
	if seqs.Len(svc) == 1 {
		return t.grantLocked(s, src, svc, ts, seqs)
	}
	if _, _, evicted := s.pending.Add(src, progress{at: ts, last: k, gen: seqs.Gen(), svc: uint8(svc), next: 1}); evicted {
		t.evictedPending.Add(1)
	}
	return Outcome{Event: EventStep, Svc: svc, Done: 1}
}

// ForgetPending drops every source's knock progress and returns how many
// sources had some. Call it when packets may have been lost before they
// were observed (the kernel dropped some of a full queue's): a lost packet
// may have been a reset, so progress made across the loss is worth
// nothing. It allocates nothing.
func (t *Tracker) ForgetPending() int {
	n := 0
	t.eachShard(func(s *shard) {
		n += s.pending.Len()
		s.pending.Clear()
		s.npending.Store(0)
	})
	return n
}

// unlockObserved publishes the pending count and unlocks the shard.
func (s *shard) unlockObserved() {
	s.npending.Store(int32(s.pending.Len()))
	s.mu.Unlock()
}

// grantLocked records a grant of svc to src for the sequence just completed.
func (t *Tracker) grantLocked(s *shard, src netip.Addr, svc int, ts int64, seqs Sequences) Outcome {
	how := MethodSequence
	if seqs.Keyed(svc) {
		how = MethodRotating
	}
	g := newGrant(ts+int64(seqs.OpenFor(svc)), seqs.Connections(svc), how)
	if !t.addGrantLocked(s, src, seqs.GrantFor(svc), ts, g, true) {
		return Outcome{Event: EventGrantRefused, Svc: svc, Done: seqs.Len(svc)}
	}
	return Outcome{Event: EventGrant, Svc: svc, Done: seqs.Len(svc)}
}

// newGrant is a grant ending at exp that lets in conns new connections (0:
// any number).
func newGrant(exp int64, conns int, how Method) grant {
	g := grant{exp: exp, how: how, lastAt: math.MinInt64 / 2}
	if conns > 0 {
		g.limited, g.left = true, uint16(min(conns, 65535))
	}
	return g
}

// addGrantLocked records a grant of service id, replacing one that is there
// (a source that knocks again gets a fresh window and a fresh count of
// connections). When the grant table is full of live grants the new grant
// is refused: evicting a live grant would lock out its owner, while refusing
// leaves the newcomer free to try again later.
//
// A grant of a plain sequence (MethodSequence, for a service with a Room)
// is refused also when its service's room is full, so plain sequences,
// which anyone who has seen one can complete from spoofed sources, never
// take the rest of the table; it ends early if no connection comes within
// the room's FirstConnect; and it never replaces a live grant made another
// way, which a spoofer could otherwise cut short.
func (t *Tracker) addGrantLocked(s *shard, src netip.Addr, id uint64, ts int64, g grant, awaiting bool) bool {
	var room Room
	if g.how == MethodSequence {
		if rs := t.rooms.Load(); rs != nil {
			room, g.plain = (*rs)[id]
		}
	}
	if g.plain && awaiting && room.FirstConnect > 0 {
		g.firstBy = ts + int64(room.FirstConnect)
	}
	key := keyOf(src, id)
	if old, ok := s.grants[key]; ok && old.ends() > ts {
		switch {
		case g.plain && !old.plain:
			return true // the source holds a stronger grant: keep it
		case g.plain && old.firstBy == 0:
			// The source has connected with the grant it renews, and
			// the kernel may hold that grant (its SYNs then never reach
			// the engine): the renewal needs no first connection.
			g.firstBy = 0
		case old.plain && !g.plain:
			t.freePlain(id)
		}
		s.grants[key] = g
		return true
	} else if ok {
		// Lapsed: the new grant needs room like any other.
		t.removeLocked(s, key, old)
	}
	full := func() bool {
		return t.grants.Load() >= t.maxGrants || g.plain && t.plainCount(id) >= room.Max
	}
	if full() && t.mayPurge(ts) {
		t.purgeLocked(s, ts)
		// Lapsed grants elsewhere are taken too, from the shards that are
		// free right now (waiting for a lock while holding one could
		// deadlock); the janitor takes the rest.
		for i := range t.shards {
			if o := &t.shards[i]; o != s && o.mu.TryLock() {
				t.purgeLocked(o, ts)
				o.mu.Unlock()
			}
		}
	}
	if t.grants.Load() >= t.maxGrants || g.plain && !t.takePlain(id, room.Max) {
		t.refusedGrants.Add(1)
		return false
	}
	s.grants[key] = g
	t.grants.Add(1)
	return true
}

// mayPurge reports whether a full table may be swept for lapsed grants now.
// A sweep walks every grant, so it runs at most once per purgeEvery: with the
// table full of live grants, each refused grant then costs nothing more (the
// janitor sweeps on its own schedule too).
func (t *Tracker) mayPurge(ts int64) bool {
	last := t.lastPurge.Load()
	return ts-last >= int64(purgeEvery) && t.lastPurge.CompareAndSwap(last, ts)
}

// Grant records a grant of service id to src until now+openFor directly, as
// a verified single-packet authorization does, letting in conns new
// connections (0: any number). It reports false when the grant table is
// full of live grants.
func (t *Tracker) Grant(src netip.Addr, id uint64, now time.Time, openFor time.Duration, conns int, how Method) bool {
	s := t.shardOf(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := t.since(now)
	return t.addGrantLocked(s, src, id, ts, newGrant(ts+int64(openFor), conns, how), true)
}

// Expired is a grant that lapsed.
type Expired struct {
	Src netip.Addr
	ID  uint64 // the service id
}

// Expire removes grants that lapsed by now and returns them, for logging. It
// walks every grant; call it from a ticker, not per packet.
func (t *Tracker) Expire(now time.Time) []Expired {
	ts := t.since(now)
	var out []Expired
	t.eachShard(func(s *shard) {
		t.purgeLocked(s, ts)
		out = append(out, s.lapsed...)
		s.lapsed = s.lapsed[:0]
	})
	return out
}

// eachShard calls fn with each shard in turn, locked: for walks off the
// packet path (status, the janitor).
func (t *Tracker) eachShard(fn func(*shard)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		fn(s)
		s.mu.Unlock()
	}
}

// purgeLocked moves s's lapsed grants to s.lapsed, for Expire to report.
func (t *Tracker) purgeLocked(s *shard, ts int64) {
	for k, g := range s.grants {
		if g.ends() <= ts {
			t.removeLocked(s, k, g)
		}
	}
}

// removeLocked removes s's lapsed grant g, and keeps it in s.lapsed for
// Expire to report.
func (t *Tracker) removeLocked(s *shard, k grantKey, g grant) {
	delete(s.grants, k)
	t.grants.Add(-1)
	if g.plain {
		t.freePlain(k.id)
	}
	s.lapsed = append(s.lapsed, Expired{Src: k.addr(), ID: k.id})
}

// Stats is a snapshot of the tracker's size and counters.
type Stats struct {
	Pending, Grants               int
	EvictedPending, RefusedGrants uint64
	Limited                       uint64 // knock attempts refused by the rate limit
	// Exhausted counts SYNs refused because the one-shot grants their
	// source held had no connection left.
	Exhausted uint64
}

// Stats returns a snapshot.
func (t *Tracker) Stats() Stats {
	st := Stats{Grants: int(t.grants.Load()), EvictedPending: t.evictedPending.Load(), RefusedGrants: t.refusedGrants.Load(),
		Limited: t.limited.Load(), Exhausted: t.exhausted.Load()}
	t.eachShard(func(s *shard) { st.Pending += s.pending.Len() })
	return st
}
