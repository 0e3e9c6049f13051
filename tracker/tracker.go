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

// Room is what grants of one service's plain sequence may take: at most Max
// live grants at once, each ending FirstConnect after it is made unless its
// source opens a connection by then.
type Room struct {
	Max          int
	FirstConnect time.Duration
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

// SetRooms sets the plain-sequence room of each service, by service id: a
// grant of a plain sequence (MethodSequence) for a service in rooms takes
// room there. Services not in rooms bound their sequence grants only by the
// table. A room made smaller than it holds refuses new grants until enough
// lapse.
func (t *Tracker) SetRooms(rooms map[uint64]Room) { t.rooms.Store(&rooms) }

// takePlain takes one place of service id's plain room, if it has one left.
func (t *Tracker) takePlain(id uint64, max int) bool {
	t.roomMu.Lock()
	defer t.roomMu.Unlock()
	if t.plain[id] >= max {
		return false
	}
	t.plain[id]++
	return true
}

// freePlain gives back one place of service id's plain room.
func (t *Tracker) freePlain(id uint64) {
	t.roomMu.Lock()
	if t.plain[id]--; t.plain[id] <= 0 {
		delete(t.plain, id)
	}
	t.roomMu.Unlock()
}

func (t *Tracker) plainCount(id uint64) int {
	t.roomMu.Lock()
	defer t.roomMu.Unlock()
	return t.plain[id]
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

// Allow spends one knock attempt of src's budget at now and reports whether
// there was one. The budget is a token bucket per IPv4 address and per IPv6
// /64, and for IPv6 also one per /48 (Prefix48Hosts); a knock passes only
// if every bucket it is charged to can pay, and then all pay.
//
// Buckets live in a bounded LRU table, so a flood of new (spoofed) sources
// evicts them. Neither a new bucket nor a re-made one starts full: it holds
// min(NewBucketKnocks, knock_burst) knocks, less the debt its key had when
// it was evicted, which a per-shard memory keeps (shard.debts) until
// refilling would have repaid it. So evicting one's own bucket gives back no
// more than waiting would, unless spoofed sources also push the debt out of
// that memory: each must leave a larger debt (knock more often than the debt
// is knocks) and only about one in shards × cells per shard / 2 lands on its
// cell, some 32768 with the default max_pending.
//
// No cap bounds how many buckets are made, daemon-wide: under a spoofed
// flood every new bucket evicts one, so such a cap would be spent by the
// flood and then refuse the real clients that come during it (the flood
// tests' legitimate tries). The memory of debts does the cap's job without
// that: it costs the flood nothing and gives an evicted source nothing back,
// and a real client, which owes nothing, starts a bucket with enough for its
// sequence however often the flood evicts it.
//
// It does not allocate.
func (t *Tracker) Allow(src netip.Addr, now time.Time) bool {
	if t.knockCost == 0 {
		return true
	}
	key, v6 := src.As16(), src.Is6() && !src.Is4In6()
	var key48 [16]byte
	if v6 {
		// One host usually holds a whole /64, and would otherwise have
		// 2^64 budgets.
		clear(key[8:])
		key48 = prefix48Key(key)
	}
	// A /64 and its /48 share a shard: one lock covers both buckets.
	s := t.limitShard(&key, &key48, v6)
	ts := t.since(now)
	s.mu.Lock()
	defer s.mu.Unlock()

	b, known := t.bucketLocked(s, &key, ts)
	allowed := b.tokens >= t.knockCost
	if v6 {
		share := t.knockCost / Prefix48Hosts
		p, _ := t.bucketLocked(s, &key48, ts)
		prefixPays := p.tokens >= share
		if allowed = allowed && prefixPays; allowed {
			p.tokens -= share
		}
		t.putLocked(s, &key48, p, ts)
		if !known && !prefixPays {
			// The /48 cannot pay: no new /64 bucket for it. Its /64s
			// cannot push other sources' buckets out faster than the
			// /48's budget allows.
			t.limited.Add(1)
			return false
		}
	}
	if allowed {
		b.tokens -= t.knockCost
	} else {
		t.limited.Add(1)
	}
	t.putLocked(s, &key, b, ts)
	return allowed
}

// prefix48Mark ends every /48 bucket key.
const prefix48Mark = 0x30

// prefix48Key is the bucket key of the /48 of the /64 key k: the prefix,
// then zeros, then prefix48Mark. No /64 key (last eight bytes zero) and no
// IPv4 key (::ffff:a.b.c.d) has that form.
func prefix48Key(k [16]byte) [16]byte {
	clear(k[6:])
	k[15] = prefix48Mark
	return k
}

// isPrefix48Key reports whether k is a key prefix48Key makes.
func isPrefix48Key(k *[16]byte) bool {
	return k[15] == prefix48Mark && [9]byte(k[6:15]) == [9]byte{}
}

// limitShard picks the shard of a knock-rate key: for IPv6 by its /48, so
// that a /64 and its /48 are in one shard.
func (t *Tracker) limitShard(key, key48 *[16]byte, v6 bool) *shard {
	if t.mask == 0 {
		return &t.shards[0]
	}
	if v6 {
		key = key48
	}
	return &t.shards[mix(key, t.seed)>>58&t.mask]
}

// bucketLocked returns key's bucket refilled to ts, and whether the table
// held it. A key the table does not hold gets a new bucket: knockNew, less
// the debt remembered for it.
func (t *Tracker) bucketLocked(s *shard, key *[16]byte, ts int64) (bucket, bool) {
	if b, ok := s.limits.Peek(netip.AddrFrom16(*key)); ok {
		b.tokens = min(b.tokens+ts-b.last, t.knockMax)
		b.last = ts
		return b, true
	}
	var owed int64
	h, i, j := s.debtCells(key)
	for _, c := range [2]*debt{&s.debts[i], &s.debts[j]} {
		if c.h == h {
			owed = max(owed, c.at-ts)
		}
	}
	return bucket{tokens: t.knockNew - min(owed, t.knockNew), last: ts}, false
}

// putLocked stores key's bucket as the most recent. When that evicts the
// least recent bucket, the evicted key's debt (what it lacks of knockNew,
// refilled to ts) is remembered.
func (t *Tracker) putLocked(s *shard, key *[16]byte, b bucket, ts int64) {
	vk, v, evicted := s.limits.Add(netip.AddrFrom16(*key), b)
	if evicted {
		s.rememberLocked(&vk, t.knockNew-min(v.tokens+ts-v.last, t.knockMax), ts)
	}
}

// rememberLocked records that key owes owed nanoseconds of budget at ts. The
// bucket it was evicted with started from what the memory held for key, so
// owed is the whole truth and replaces it; a key that owes nothing frees
// its cell.
func (s *shard) rememberLocked(key *[16]byte, owed, ts int64) {
	h, i, j := s.debtCells(key)
	ci, cj := &s.debts[i], &s.debts[j]
	for _, c := range [2]*debt{ci, cj} {
		if c.h == h {
			if owed > 0 {
				c.at = ts + owed
			} else {
				c.at = math.MinInt64 / 2
			}
			return
		}
	}
	if owed <= 0 {
		return
	}
	// The cell with the smaller debt left, in knocks, if it is smaller
	// than this one; a free cell has none.
	left := func(c *debt) int64 { return max(c.at-ts, 0) * weight(c.h) }
	c := ci
	if left(cj) < left(ci) {
		c = cj
	}
	if left(c) < owed*weight(h) {
		c.h, c.at = h, ts+owed
	}
}

// debtCells are key's hash, its low bit set for a /48 key and clear
// otherwise, and its two cells in s.debts.
func (s *shard) debtCells(key *[16]byte) (h, i, j uint64) {
	raw := maphash.Bytes(s.debtSeed, key[:])
	h = raw &^ prefix48Bit
	if isPrefix48Key(key) {
		h |= prefix48Bit
	}
	return h, raw & s.debtMask, (raw >> 32) & s.debtMask
}

// Granted reports whether src holds a live grant for one of the services ids
// that lets in a connection from srcPort (see Admit).
func (t *Tracker) Granted(src netip.Addr, ids []uint64, srcPort uint16, now time.Time) bool {
	return t.Admit(src, ids, srcPort, now).OK
}

// Admission is Admit's answer.
type Admission struct {
	OK bool
	// ID is the service whose grant let the connection in.
	ID uint64
	// First: the first connection of a grant of a plain sequence, which
	// until now would have ended at its Room.FirstConnect; from now on it
	// lasts its whole open_for (the moment to mirror it into the kernel).
	First bool
}

// Admit lets in a connection from src's srcPort to one of the services ids
// if src holds a live grant that allows it: any grant without a connection
// limit, a one-shot grant with connections left (one is taken), or a
// retransmitted SYN of a one-shot grant's last connection (the same source
// port, within SYNRetransmitWindow of it). It does not allocate.
func (t *Tracker) Admit(src netip.Addr, ids []uint64, srcPort uint16, now time.Time) Admission {
	if len(ids) == 0 {
		return Admission{}
	}
	s := t.shardOf(src)
	ts := t.since(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	exhausted := false // a live one-shot grant with no connection left
	for _, id := range ids {
		key := keyOf(src, id)
		g, ok := s.grants[key]
		if !ok || g.ends() <= ts {
			continue
		}
		a := Admission{OK: true, ID: id, First: g.firstBy != 0}
		g.firstBy = 0
		switch {
		case !g.limited:
		case g.lastPort != 0 && g.lastPort == srcPort && ts-g.lastAt <= int64(SYNRetransmitWindow):
		case g.left > 0:
			g.left--
			g.lastPort, g.lastAt = srcPort, ts
		default:
			exhausted = true
			continue
		}
		if a.First || g.limited {
			s.grants[key] = g
		}
		return a
	}
	if exhausted {
		t.exhausted.Add(1)
	}
	return Admission{}
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
