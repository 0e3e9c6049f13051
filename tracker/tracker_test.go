package tracker_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

func tcp(p uint16) uint32 { return rules.KnockKey(rules.ProtoTCP, p) }
func udp(p uint16) uint32 { return rules.KnockKey(rules.ProtoUDP, p) }

// fakeSeq is one sequence of fakeSeqs.
type fakeSeq struct {
	knocks []uint32
	step   time.Duration
	open   time.Duration
	grant  int  // the service this sequence grants
	keyed  bool // a rotating sequence: MethodRotating, no plain room
}

// fakeSeqs is a tracker.Sequences without rules.
type fakeSeqs []fakeSeq

func (f fakeSeqs) Begins(k uint32) (int, bool) {
	for i, s := range f {
		if s.knocks[0] == k {
			return i, true
		}
	}
	return 0, false
}
func (f fakeSeqs) Len(svc int) int                   { return len(f[svc].knocks) }
func (f fakeSeqs) Step(svc, i int) uint32            { return f[svc].knocks[i] }
func (f fakeSeqs) StepTimeout(svc int) time.Duration { return f[svc].step }
func (f fakeSeqs) OpenFor(svc int) time.Duration     { return f[svc].open }
func (f fakeSeqs) GrantFor(svc int) uint64           { return uint64(f[svc].grant) }
func (f fakeSeqs) Gen() uint16                       { return 0 }
func (f fakeSeqs) Connections(svc int) int           { return 0 }
func (f fakeSeqs) Remap(uint16, int) (int, bool)     { return 0, false }
func (f fakeSeqs) Keyed(svc int) bool                { return f[svc].keyed }

// seqs: 0 = ssh (7000, 8000, 9000/udp; 5s; 30s), 1 = web (10001/udp,
// 10002, 10003; 2s; 1m), 2 = one (6000/udp; 10s), 3 = a variant of ssh
// (7100, 7200), which grants service 0.
var seqs = fakeSeqs{
	{knocks: []uint32{tcp(7000), tcp(8000), udp(9000)}, step: 5 * time.Second, open: 30 * time.Second, grant: 0},
	{knocks: []uint32{udp(10001), tcp(10002), tcp(10003)}, step: 2 * time.Second, open: time.Minute, grant: 1},
	{knocks: []uint32{udp(6000)}, step: time.Second, open: 10 * time.Second, grant: 2},
	{knocks: []uint32{tcp(7100), tcp(7200)}, step: 5 * time.Second, open: 20 * time.Second, grant: 0},
}

var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newTracker(t testing.TB, maxPending, maxGrants int) *tracker.Tracker {
	t.Helper()
	tr, err := tracker.New(tracker.Config{MaxPending: maxPending, MaxGrants: maxGrants})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

var (
	src  = netip.MustParseAddr("192.0.2.1")
	src2 = netip.MustParseAddr("192.0.2.2")
	src6 = netip.MustParseAddr("2001:db8::1")
)

// knock is one Observe and what it should say.
type knock struct {
	k    uint32
	at   time.Duration
	want tracker.Event
	svc  int // checked for every event but None
	done int
}

func TestObserve(t *testing.T) {
	const (
		none   = tracker.EventNone
		reset  = tracker.EventReset
		step   = tracker.EventStep
		repeat = tracker.EventRepeat
		grant  = tracker.EventGrant
	)
	s := time.Second
	tests := []struct {
		name   string
		knocks []knock
		// granted lists the services src holds at the last knock's time.
		granted []int
	}{
		{name: "in order grants", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {udp(9000), 2 * s, grant, 0, 3},
		}, granted: []int{0}},
		{name: "in order, the other service", knocks: []knock{
			{udp(10001), 0, step, 1, 1}, {tcp(10002), 1 * s, step, 1, 2}, {tcp(10003), 2 * s, grant, 1, 3},
		}, granted: []int{1}},
		{name: "single knock grants at once", knocks: []knock{
			{udp(6000), 0, grant, 2, 1},
		}, granted: []int{2}},
		{name: "variant grants its service", knocks: []knock{
			{tcp(7100), 0, step, 3, 1}, {tcp(7200), 1 * s, grant, 3, 2},
		}, granted: []int{0}},
		{name: "wrong order resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {udp(9000), 1 * s, reset, 0, 0}, {tcp(8000), 2 * s, none, 0, 0},
		}},
		{name: "starting in the middle does nothing", knocks: []knock{
			{tcp(8000), 0, none, 0, 0}, {udp(9000), 1 * s, none, 0, 0},
		}},
		{name: "wrong protocol resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {tcp(9000), 2 * s, reset, 0, 0},
		}},
		{name: "another port in the middle resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(22), 1 * s, reset, 0, 0}, {tcp(8000), 2 * s, none, 0, 0}, {udp(9000), 3 * s, none, 0, 0},
		}},
		{name: "another port before the last knock resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {tcp(8001), 2 * s, reset, 0, 0}, {udp(9000), 3 * s, none, 0, 0},
		}},
		{name: "starting over after a reset", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(80), 1 * s, reset, 0, 0},
			{tcp(7000), 2 * s, step, 0, 1}, {tcp(8000), 3 * s, step, 0, 2}, {udp(9000), 4 * s, grant, 0, 3},
		}, granted: []int{0}},
		{name: "first knock mid-sequence starts anew", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {tcp(7000), 2 * s, step, 0, 1},
			{udp(9000), 3 * s, reset, 0, 0},
		}},
		{name: "another service's first knock switches", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {udp(10001), 1 * s, step, 1, 1}, {tcp(8000), 2 * s, reset, 1, 0},
		}},
		{name: "step timeout exceeded resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 5*s + 1, reset, 0, 0}, {udp(9000), 6 * s, none, 0, 0},
		}},
		{name: "step timeout exceeded on the last knock", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 4 * s, step, 0, 2}, {udp(9000), 10 * s, reset, 0, 0},
		}},
		{name: "exactly the step timeout is in time", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 5 * s, step, 0, 2}, {udp(9000), 10 * s, grant, 0, 3},
		}, granted: []int{0}},
		{name: "per-service step timeout", knocks: []knock{
			{udp(10001), 0, step, 1, 1}, {tcp(10002), 3 * s, reset, 1, 0},
		}},
		{name: "late first knock starts anew", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2},
			{tcp(7000), 10 * s, step, 0, 1}, {tcp(8000), 11 * s, step, 0, 2}, {udp(9000), 12 * s, grant, 0, 3},
		}, granted: []int{0}},
		{name: "retransmission ignored", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(7000), 1 * s, repeat, 0, 1},
			{tcp(8000), 2 * s, step, 0, 2}, {tcp(8000), 3 * s, repeat, 0, 2}, {tcp(8000), 3 * s, repeat, 0, 2},
			{udp(9000), 4 * s, grant, 0, 3},
		}, granted: []int{0}},
		{name: "retransmission does not extend the window", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(7000), 4 * s, repeat, 0, 1}, {tcp(8000), 5*s + 1, reset, 0, 0},
		}},
		{name: "retransmission after the timeout resets", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {tcp(8000), 7 * s, reset, 0, 0},
		}},
		{name: "retransmission of an earlier knock resets", knocks: []knock{
			{udp(10001), 0, step, 1, 1}, {tcp(10002), 1 * s, step, 1, 2}, {udp(10001), 2 * s, step, 1, 1}, {tcp(10003), 3 * s, reset, 1, 0},
		}},
		{name: "knock after grant is ignored", knocks: []knock{
			{tcp(7000), 0, step, 0, 1}, {tcp(8000), 1 * s, step, 0, 2}, {udp(9000), 2 * s, grant, 0, 3},
			{udp(9000), 3 * s, none, 0, 0}, {tcp(22), 4 * s, none, 0, 0},
		}, granted: []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t, 64, 64)
			var last time.Duration
			for i, k := range tt.knocks {
				got := tr.Observe(src, k.k, at(k.at), seqs)
				if got.Event != k.want || got.Done != k.done || (k.want != tracker.EventNone && got.Svc != k.svc) {
					t.Fatalf("knock %d (%#x at %v) = %+v (%v), want %v svc %d done %d",
						i, k.k, k.at, got, got.Event, k.want, k.svc, k.done)
				}
				last = k.at
			}
			for svc := range 4 {
				want := false
				for _, g := range tt.granted {
					want = want || g == svc
				}
				if got := tr.Granted(src, ids(1<<svc), 40000, at(last)); got != want {
					t.Errorf("Granted(svc %d) = %v, want %v", svc, got, want)
				}
			}
			// Another source never shares the state.
			if tr.Granted(src2, ids(0xf), 40000, at(last)) {
				t.Error("another source is granted")
			}
		})
	}
}

// complete knocks the whole of sequence svc from src, one second apart,
// starting at start, and returns the time of the last knock.
func complete(t *testing.T, tr *tracker.Tracker, src netip.Addr, svc int, start time.Time) (tracker.Outcome, time.Time) {
	t.Helper()
	now := start
	var out tracker.Outcome
	for i, k := range seqs[svc].knocks {
		if i > 0 {
			now = now.Add(time.Second)
		}
		out = tr.Observe(src, k, now, seqs)
	}
	return out, now
}

func TestSourcesAreIndependent(t *testing.T) {
	tr := newTracker(t, 64, 64)
	// Interleaved knocks from two sources do not disturb each other.
	tr.Observe(src, tcp(7000), at(0), seqs)
	tr.Observe(src6, tcp(7000), at(0), seqs)
	tr.Observe(src, tcp(8000), at(time.Second), seqs)
	tr.Observe(src2, tcp(22), at(time.Second), seqs) // a stranger's SYN
	tr.Observe(src6, tcp(8000), at(time.Second), seqs)
	if got := tr.Observe(src, udp(9000), at(2*time.Second), seqs); got.Event != tracker.EventGrant {
		t.Fatalf("src: %v, want grant", got.Event)
	}
	if tr.Granted(src6, ids(1), 40000, at(2*time.Second)) {
		t.Error("src6 granted before its last knock")
	}
	if got := tr.Observe(src6, udp(9000), at(2*time.Second), seqs); got.Event != tracker.EventGrant {
		t.Fatalf("src6: %v, want grant", got.Event)
	}
	// An IPv4 address and its IPv4-mapped IPv6 form are different sources.
	mapped := netip.AddrFrom16(src.As16())
	if tr.Granted(mapped, ids(1), 40000, at(2*time.Second)) {
		t.Error("IPv4-mapped form of a granted IPv4 source is granted")
	}
	if tr.Granted(src2, ids(1), 40000, at(2*time.Second)) {
		t.Error("stranger granted")
	}
}

func TestGrantExpiry(t *testing.T) {
	open := seqs[0].open
	tests := []struct {
		name  string
		after time.Duration // since the last knock
		mask  uint64
		want  bool
	}{
		{"right after", 0, 1, true},
		{"just before expiry", open - 1, 1, true},
		{"at expiry", open, 1, false},
		{"after expiry", open + time.Hour, 1, false},
		{"other service", 0, 1 << 1, false},
		{"mask with several services", 0, 1<<5 | 1<<1 | 1, true},
		{"empty mask", 0, 0, false},
		{"high bit", 0, 1 << 63, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t, 64, 64)
			out, last := complete(t, tr, src, 0, t0)
			if out.Event != tracker.EventGrant {
				t.Fatalf("complete = %v", out.Event)
			}
			if got := tr.Granted(src, ids(tt.mask), 40000, last.Add(tt.after)); got != tt.want {
				t.Errorf("Granted(mask %#x, +%v) = %v, want %v", tt.mask, tt.after, got, tt.want)
			}
		})
	}
}

func TestRegrantExtends(t *testing.T) {
	tr := newTracker(t, 64, 64)
	_, first := complete(t, tr, src, 0, t0)
	_, second := complete(t, tr, src, 0, first.Add(20*time.Second))
	open := seqs[0].open
	if !tr.Granted(src, ids(1), 40000, first.Add(open)) {
		t.Error("a second completion did not extend the grant")
	}
	if tr.Granted(src, ids(1), 40000, second.Add(open)) {
		t.Error("grant outlives the second completion's open_for")
	}
	if st := tr.Stats(); st.Grants != 1 {
		t.Errorf("Grants = %d, want 1", st.Grants)
	}
}

func TestExpire(t *testing.T) {
	tr := newTracker(t, 64, 64)
	_, a := complete(t, tr, src, 0, t0)                     // expires a+30s
	_, b := complete(t, tr, src2, 1, t0.Add(time.Second))   // expires b+1m
	_, c := complete(t, tr, src6, 2, t0.Add(2*time.Second)) // expires c+10s
	if st := tr.Stats(); st.Grants != 3 || st.Pending != 0 {
		t.Fatalf("stats = %+v, want 3 grants and nothing pending", st)
	}
	steps := []struct {
		name   string
		now    time.Time
		want   []tracker.Expired
		grants int
	}{
		{"nothing lapsed", c, nil, 3},
		{"just before the first", c.Add(10*time.Second - 1), nil, 3},
		{"the first lapses at its expiry", c.Add(10 * time.Second), []tracker.Expired{{Src: src6, ID: 2}}, 2},
		{"once only", c.Add(10 * time.Second), nil, 2},
		{"the second", a.Add(30 * time.Second), []tracker.Expired{{Src: src, ID: 0}}, 1},
		{"the third, much later", b.Add(time.Hour), []tracker.Expired{{Src: src2, ID: 1}}, 0},
		{"empty", b.Add(2 * time.Hour), nil, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got := tr.Expire(st.now)
			if len(got) != len(st.want) {
				t.Fatalf("Expire = %v, want %v", got, st.want)
			}
			for i := range got {
				if got[i] != st.want[i] {
					t.Errorf("Expire[%d] = %v, want %v", i, got[i], st.want[i])
				}
			}
			if n := tr.Stats().Grants; n != st.grants {
				t.Errorf("Grants = %d, want %d", n, st.grants)
			}
		})
	}
}

func TestEvictionSparesGrants(t *testing.T) {
	const maxPending, flood = 4, 5000
	tr := newTracker(t, maxPending, 64)
	granted := []netip.Addr{src, src2, src6}
	now := t0
	for _, g := range granted {
		out, last := complete(t, tr, g, 0, now)
		if out.Event != tracker.EventGrant {
			t.Fatalf("%v: %v, want grant", g, out.Event)
		}
		now = last
	}
	// A source halfway through when the flood starts.
	halfway := netip.MustParseAddr("198.51.100.7")
	tr.Observe(halfway, tcp(7000), now, seqs)

	before := tr.Stats()
	for i := range flood {
		if out := tr.Observe(addr(i), tcp(7000), now, seqs); out.Event != tracker.EventStep {
			t.Fatalf("flood %d: %v", i, out.Event)
		}
	}
	st := tr.Stats()
	if st.Pending > maxPending {
		t.Errorf("Pending = %d, over the bound %d", st.Pending, maxPending)
	}
	if got := st.EvictedPending - before.EvictedPending; got < flood-maxPending {
		t.Errorf("EvictedPending grew by %d, want at least %d", got, flood-maxPending)
	}
	if st.Grants != len(granted) {
		t.Errorf("Grants = %d, want %d", st.Grants, len(granted))
	}
	for _, g := range granted {
		if !tr.Granted(g, ids(1), 40000, now) {
			t.Errorf("%v lost its grant to the flood", g)
		}
	}
	// The early flooders' and the halfway source's progress is gone.
	if out := tr.Observe(halfway, tcp(8000), now.Add(time.Second), seqs); out.Event != tracker.EventNone {
		t.Errorf("halfway source kept its progress through the flood: %v", out.Event)
	}
	if out := tr.Observe(addr(0), tcp(8000), now.Add(time.Second), seqs); out.Event != tracker.EventNone {
		t.Errorf("first flooder kept its progress: %v", out.Event)
	}
}

func TestGrantTableFull(t *testing.T) {
	// One pending slot keeps the tracker to a single shard, so the grant
	// bound is exact.
	const maxGrants = 3
	tr := newTracker(t, 1, maxGrants)
	now := t0
	var holders []netip.Addr
	for i := range maxGrants {
		a := addr(i)
		out, last := complete(t, tr, a, 0, now)
		if out.Event != tracker.EventGrant {
			t.Fatalf("holder %d: %v, want grant", i, out.Event)
		}
		holders = append(holders, a)
		now = last
	}

	// The table is full of live grants: a newcomer is refused.
	late := netip.MustParseAddr("203.0.113.9")
	out, now := complete(t, tr, late, 0, now.Add(time.Second))
	if out.Event != tracker.EventGrantRefused || out.Svc != 0 || out.Done != 3 {
		t.Fatalf("newcomer: %+v, want grant-refused", out)
	}
	if st := tr.Stats(); st.RefusedGrants != 1 || st.Grants != maxGrants {
		t.Errorf("stats = %+v, want 1 refused, %d grants", st, maxGrants)
	}
	if tr.Granted(late, ids(1), 40000, now) {
		t.Error("refused newcomer is granted")
	}
	for _, h := range holders {
		if !tr.Granted(h, ids(1), 40000, now) {
			t.Errorf("holder %v lost its grant", h)
		}
	}
	if tr.Grant(late, 1, now, time.Minute, 0, tracker.MethodSequence) {
		t.Error("Grant succeeded in a full table")
	}
	if st := tr.Stats(); st.RefusedGrants != 2 {
		t.Errorf("RefusedGrants = %d, want 2", st.RefusedGrants)
	}
	// A holder may still renew: that adds no entry.
	if out, _ := complete(t, tr, holders[0], 0, now); out.Event != tracker.EventGrant {
		t.Errorf("renewal by a holder: %v, want grant", out.Event)
	}

	// Once the other holders' grants lapse, the newcomer gets in, even
	// without a call to Expire.
	now = now.Add(seqs[0].open - time.Second) // holders 1 and 2 lapsed, holder 0 renewed
	if tr.Granted(holders[1], ids(1), 40000, now) {
		t.Fatal("holder 1 still granted; test timing is off")
	}
	out, now = complete(t, tr, late, 0, now)
	if out.Event != tracker.EventGrant {
		t.Fatalf("newcomer after expiry: %+v, want grant", out)
	}
	if !tr.Granted(late, ids(1), 40000, now) || !tr.Granted(holders[0], ids(1), 40000, now) {
		t.Error("newcomer or renewed holder not granted")
	}
	if st := tr.Stats(); st.RefusedGrants != 2 || st.Grants > maxGrants {
		t.Errorf("stats = %+v", st)
	}
}

func TestGrantDirect(t *testing.T) {
	tests := []struct {
		name    string
		svc     int
		openFor time.Duration
		check   time.Duration
		mask    uint64
		want    bool
	}{
		{"granted", 3, time.Minute, 0, 1 << 3, true},
		{"until just before the end", 3, time.Minute, time.Minute - 1, 1 << 3, true},
		{"not at the end", 3, time.Minute, time.Minute, 1 << 3, false},
		{"not another service", 3, time.Minute, 0, 1<<2 | 1<<4, false},
		{"service 63", 63, time.Minute, 0, 1 << 63, true},
		{"zero open_for grants nothing", 0, 0, 0, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t, 16, 16)
			if !tr.Grant(src, uint64(tt.svc), t0, tt.openFor, 0, tracker.MethodSequence) {
				t.Fatal("Grant refused in an empty table")
			}
			if got := tr.Granted(src, ids(tt.mask), 40000, t0.Add(tt.check)); got != tt.want {
				t.Errorf("Granted = %v, want %v", got, tt.want)
			}
			if tr.Granted(src2, ids(tt.mask), 40000, t0) {
				t.Error("another source granted")
			}
		})
	}
	t.Run("regrant replaces", func(t *testing.T) {
		tr := newTracker(t, 16, 16)
		tr.Grant(src, 0, t0, time.Minute, 0, tracker.MethodSequence)
		tr.Grant(src, 0, t0.Add(time.Minute), time.Minute, 0, tracker.MethodSequence)
		if !tr.Granted(src, ids(1), 40000, t0.Add(90*time.Second)) {
			t.Error("second Grant did not extend")
		}
		if n := tr.Stats().Grants; n != 1 {
			t.Errorf("Grants = %d, want 1", n)
		}
	})
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		c       tracker.Config
		wantErr bool
	}{
		{"ok", tracker.Config{MaxPending: 1, MaxGrants: 1}, false},
		{"large", tracker.Config{MaxPending: 1 << 20, MaxGrants: 1 << 16}, false},
		{"uneven", tracker.Config{MaxPending: 3, MaxGrants: 17}, false},
		{"zero pending", tracker.Config{MaxPending: 0, MaxGrants: 1}, true},
		{"zero grants", tracker.Config{MaxPending: 1, MaxGrants: 0}, true},
		{"negative", tracker.Config{MaxPending: -1, MaxGrants: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := tracker.New(tt.c)
			if tt.wantErr {
				if !errors.Is(err, tracker.ErrBadConfig) || tr != nil {
					t.Errorf("New = %v, %v; want ErrBadConfig", tr, err)
				}
				return
			}
			if err != nil || tr == nil {
				t.Fatalf("New = %v, %v", tr, err)
			}
			if st := tr.Stats(); st != (tracker.Stats{}) {
				t.Errorf("fresh stats = %+v", st)
			}
		})
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		e    tracker.Event
		want string
	}{
		{tracker.EventNone, "none"},
		{tracker.EventReset, "reset"},
		{tracker.EventStep, "step"},
		{tracker.EventRepeat, "repeat"},
		{tracker.EventGrant, "grant"},
		{tracker.EventGrantRefused, "grant-refused"},
		{tracker.Event(200), "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.e.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
		})
	}
}

// allTCP compiles a single all-TCP ascending sequence 7000, 8000, 9000.
func allTCP(t *testing.T) *rules.Set {
	t.Helper()
	c := rules.Defaults()
	s := rules.ServiceDefaults()
	s.Ports = []int{22}
	s.Sequence = []string{"7000", "8000", "9000"}
	c.Services = map[string]rules.ServiceConfig{"ssh": s}
	set, err := rules.Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestAscendingScanNeverGrants(t *testing.T) {
	set := allTCP(t)
	tests := []struct {
		name   string
		ports  []uint16
		repeat int           // SYNs per port (retransmissions)
		gap    time.Duration // between SYNs
	}{
		{name: "6990..9010", ports: portRange(6990, 9010), repeat: 1, gap: time.Millisecond},
		{name: "6990..9010 at once", ports: portRange(6990, 9010), repeat: 1, gap: 0},
		{name: "6990..9010 with retransmissions", ports: portRange(6990, 9010), repeat: 3, gap: time.Millisecond},
		{name: "every port", ports: portRange(1, 65535), repeat: 1, gap: time.Microsecond},
		{name: "descending", ports: reversed(portRange(6990, 9010)), repeat: 1, gap: time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t, 64, 64)
			now := t0
			for _, p := range tt.ports {
				for range tt.repeat {
					out := tr.Observe(src, tcp(p), now, set)
					if out.Event == tracker.EventGrant || out.Done > 1 {
						t.Fatalf("port %d: %+v (%v)", p, out, out.Event)
					}
					now = now.Add(tt.gap)
				}
			}
			if tr.Granted(src, set.CoverIDs(22), 40000, now) {
				t.Error("scan was granted")
			}
		})
	}
	t.Run("the sequence itself grants", func(t *testing.T) {
		tr := newTracker(t, 64, 64)
		var out tracker.Outcome
		for i, p := range []uint16{7000, 8000, 9000} {
			out = tr.Observe(src, tcp(p), t0.Add(time.Duration(i)*time.Second), set)
		}
		if out.Event != tracker.EventGrant || !tr.Granted(src, set.CoverIDs(22), 40000, t0.Add(2*time.Second)) {
			t.Errorf("sequence: %v", out.Event)
		}
	})
}

func portRange(lo, hi int) []uint16 {
	var out []uint16
	for p := lo; p <= hi; p++ {
		out = append(out, uint16(p))
	}
	return out
}

func reversed(s []uint16) []uint16 {
	out := make([]uint16, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestConcurrent(t *testing.T) {
	const workers, rounds = 8, 200
	tr := newTracker(t, 1024, 1024)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := netip.AddrFrom4([4]byte{198, 51, 100, byte(w)})
			stranger := netip.AddrFrom4([4]byte{203, 0, 113, byte(w)})
			now := t0
			for r := range rounds {
				for i, k := range seqs[0].knocks {
					now = now.Add(time.Millisecond)
					tr.Observe(stranger, tcp(uint16(7001+r)), now, seqs) // noise
					out := tr.Observe(me, k, now, seqs)
					want := tracker.EventStep
					if i == len(seqs[0].knocks)-1 {
						want = tracker.EventGrant
					}
					if out.Event != want {
						errs <- fmt.Errorf("worker %d round %d knock %d: %v, want %v", w, r, i, out.Event, want)
						return
					}
				}
				if !tr.Granted(me, ids(1), 40000, now) {
					errs <- fmt.Errorf("worker %d round %d: not granted", w, r)
					return
				}
			}
		}()
	}
	// A janitor and a stats reader run alongside.
	stop := make(chan struct{})
	var side sync.WaitGroup
	side.Add(1)
	go func() {
		defer side.Done()
		for {
			select {
			case <-stop:
				return
			default:
				tr.Expire(t0)
				tr.Stats()
				tr.Grant(src, 1, t0, time.Second, 0, tracker.MethodSequence)
			}
		}
	}()
	wg.Wait()
	close(stop)
	side.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := tr.Stats(); st.Grants < workers {
		t.Errorf("Grants = %d, want at least %d", st.Grants, workers)
	}
}

// TestGrantTableHoldsMaxGrants checks the documented bound: a tracker made
// with MaxGrants N holds N live grants of distinct sources before it refuses
// one, however the sources spread over the shards: a bound split per shard
// would refuse early on an unlucky spread.
func TestGrantTableHoldsMaxGrants(t *testing.T) {
	tests := []struct {
		name                  string
		maxPending, maxGrants int
	}{
		{"one pending slot, one shard", 1, 64},
		{"16 grants", rules.DefaultMaxPending, 16},
		{"1024 grants", rules.DefaultMaxPending, 1024},
		{"defaults", rules.DefaultMaxPending, rules.DefaultMaxGrants},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(t, tt.maxPending, tt.maxGrants)
			for i := range tt.maxGrants {
				if !tr.Grant(addr(i), 0, t0, time.Hour, 0, tracker.MethodSequence) {
					t.Fatalf("grant %d of %d refused with %d live grants held (RefusedGrants %d)",
						i+1, tt.maxGrants, tr.Stats().Grants, tr.Stats().RefusedGrants)
				}
			}
			if st := tr.Stats(); st.Grants != tt.maxGrants || st.RefusedGrants != 0 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// ids turns a mask of fake service indexes into the ids Granted takes (a fake
// service's id is its index).
func ids(mask uint64) []uint64 {
	var out []uint64
	for i := uint64(0); mask != 0; i, mask = i+1, mask>>1 {
		if mask&1 != 0 {
			out = append(out, i)
		}
	}
	return out
}

// TestFullGrantTableRefusalIsCheap: once the table is full of live grants, a
// refused grant does not sweep the whole table each time (a spoofed flood of
// completed sequences would otherwise cost a sweep per packet).
func TestFullGrantTableRefusalIsCheap(t *testing.T) {
	tr := newTracker(t, 1024, 4096)
	for i := range 4096 {
		if !tr.Grant(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1, t0, time.Hour, 0, tracker.MethodSequence) {
			t.Fatalf("grant %d refused below max_grants", i)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		if tr.Grant(netip.MustParseAddr("10.2.0.1"), 1, t0, time.Hour, 0, tracker.MethodSequence) {
			t.Fatal("grant accepted into a full table")
		}
	})
	// A sweep walks every grant; the first refusal may sweep, the next ones
	// within purgeEvery must not.
	if allocs > 1 {
		t.Fatalf("a refused grant allocates %v times on average: it sweeps the table", allocs)
	}
}

// TestAllowPerIPv6Prefix: IPv6 sources share one knock budget per /64, so
// a host cannot multiply its budget by rotating addresses in its prefix.
func TestAllowPerIPv6Prefix(t *testing.T) {
	tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64, KnockRate: 1, KnockBurst: 3})
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for i := range 10 {
		src := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x77, 7: 1, 15: byte(i + 1)}) // fd00:77:0:1::i
		if tr.Allow(src, t0) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d of 10 knocks from one /64 allowed at once, want the burst of 3", allowed)
	}
	if !tr.Allow(netip.MustParseAddr("fd00:77:0:2::1"), t0) {
		t.Fatal("another /64 shares the first one's budget")
	}
	for i := range 3 {
		if !tr.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), t0) {
			t.Fatal("IPv4 sources are not limited one by one")
		}
	}
}
