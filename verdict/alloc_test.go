package verdict_test

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// hotPath is one per-packet path of Decide: setup prepares the engine and
// returns the function to measure, which must leave the engine as it found
// it (or in an equivalent state) so that every run takes the same path.
type hotPath struct {
	name  string
	setup func(tb testing.TB, e *verdict.Engine) func()
}

// manySources returns n distinct IPv4 sources.
func manySources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return out
}

// grant knocks client4's ssh sequence at t0, t0+1s, t0+2s.
func grant(tb testing.TB, e *verdict.Engine, src netip.Addr) {
	tb.Helper()
	for i, k := range sshKnocks(tb, src) {
		e.Decide(k, t0.Add(time.Duration(i)*time.Second))
	}
	if !e.Tracker().Granted(src, e.Rules().CoverIDs(22), 40000, t0.Add(3*time.Second)) {
		tb.Fatal("ssh sequence did not grant")
	}
}

// twoKnocks sends each source's first two ssh knocks, at and a second later,
// and returns each one's last knock, still to be sent.
func twoKnocks(tb testing.TB, e *verdict.Engine, srcs []netip.Addr, at time.Time) [][]byte {
	tb.Helper()
	last := make([][]byte, len(srcs))
	for i, s := range srcs {
		k := sshKnocks(tb, s)
		e.Decide(k[0], at)
		e.Decide(k[1], at.Add(time.Second))
		last[i] = k[2]
	}
	return last
}

// expectDecision fails when pkt does not get want/reason, so that a
// measurement is known to take the path it names.
func expectDecision(tb testing.TB, e *verdict.Engine, pkt []byte, now time.Time, want verdict.Verdict, reason verdict.Reason) {
	tb.Helper()
	if d := e.Decide(pkt, now); d.Verdict != want || d.Reason != reason {
		tb.Fatalf("decision %v/%v, want %v/%v", d.Verdict, d.Reason, want, reason)
	}
}

// zeroAllocPaths must not allocate.
var zeroAllocPaths = []hotPath{
	{"unprotected syn", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client4, 80)
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonUnprotected)
		return func() { e.Decide(pkt, t0) }
	}},
	{"unprotected syn ipv6", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client6, 443)
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonUnprotected)
		return func() { e.Decide(pkt, t0) }
	}},
	{"protected granted syn", func(tb testing.TB, e *verdict.Engine) func() {
		grant(tb, e, client4)
		pkt := syn(tb, client4, 22)
		now := t0.Add(3 * time.Second)
		expectDecision(tb, e, pkt, now, verdict.Accept, verdict.ReasonGranted)
		return func() { e.Decide(pkt, now) }
	}},
	{"protected no-grant syn", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client4b, 22)
		expectDecision(tb, e, pkt, t0, verdict.Reject, verdict.ReasonNoGrant)
		return func() { e.Decide(pkt, t0) }
	}},
	{"protected no-grant syn ipv6 with AH", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := withAH(syn(tb, client6, 22))
		expectDecision(tb, e, pkt, t0, verdict.Reject, verdict.ReasonNoGrant)
		return func() { e.Decide(pkt, t0) }
	}},
	{"protected no-grant syn, drop", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client6b, 5432)
		expectDecision(tb, e, pkt, t0, verdict.Drop, verdict.ReasonNoGrant)
		return func() { e.Decide(pkt, t0) }
	}},
	{"knock repeat by a source with progress", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client4, 7000)
		e.Decide(pkt, t0)
		if d := e.Decide(pkt, t0); d.Knock.Event != tracker.EventRepeat {
			tb.Fatalf("event %v, want repeat", d.Knock.Event)
		}
		return func() { e.Decide(pkt, t0) }
	}},
	{"knock step by a source with progress", func(tb testing.TB, e *verdict.Engine) func() {
		// 7000 restarts the sequence (the source is at knock 2), 8000
		// advances it: both find the source already in the table.
		k1, k2 := syn(tb, client4, 7000), syn(tb, client4, 8000)
		e.Decide(k1, t0)
		e.Decide(k2, t0)
		if d := e.Decide(k1, t0); d.Knock.Event != tracker.EventStep || d.Knock.Done != 1 {
			tb.Fatalf("restart: %+v", d.Knock)
		}
		if d := e.Decide(k2, t0); d.Knock.Event != tracker.EventStep || d.Knock.Done != 2 {
			tb.Fatalf("step: %+v", d.Knock)
		}
		return func() { e.Decide(k1, t0); e.Decide(k2, t0) }
	}},
	{"udp knock step by a source with progress", func(tb testing.TB, e *verdict.Engine) func() {
		k1, k2 := udpPkt(tb, client6, 6000, nil), udpPkt(tb, client6, 6000, []byte("again"))
		e.Decide(k1, t0)
		if d := e.Decide(k2, t0); d.Knock.Event != tracker.EventRepeat {
			tb.Fatalf("event %v, want repeat", d.Knock.Event)
		}
		return func() { e.Decide(k2, t0) }
	}},
	{"wrong knock resets a source with progress", func(tb testing.TB, e *verdict.Engine) func() {
		k1, bad := syn(tb, client4, 7000), udpPkt(tb, client4, 9000, nil)
		e.Decide(k1, t0)
		if d := e.Decide(bad, t0); d.Knock.Event != tracker.EventReset {
			tb.Fatalf("event %v, want reset", d.Knock.Event)
		}
		return func() { e.Decide(k1, t0); e.Decide(bad, t0) }
	}},
	{"wrong udp datagram resets a source with progress", func(tb testing.TB, e *verdict.Engine) func() {
		k1, bad := syn(tb, client4, 7000), udpPkt(tb, client4, 53, []byte("q"))
		e.Decide(k1, t0)
		if d := e.Decide(bad, t0); d.Knock.Event != tracker.EventReset || d.Reason != verdict.ReasonNotKnock {
			tb.Fatalf("%v/%v, want reset/not-knock", d.Knock.Event, d.Reason)
		}
		return func() { e.Decide(k1, t0); e.Decide(bad, t0) }
	}},
	{"udp not knock from a source with progress elsewhere in its shard", func(tb testing.TB, e *verdict.Engine) func() {
		// Many sources with progress: every shard has some, so the
		// datagram takes the locked look-up, finds nothing and resets
		// nothing.
		for _, s := range manySources(256) {
			e.Decide(syn(tb, s, 7000), t0)
		}
		pkt := udpPkt(tb, client6b, 53, []byte("q"))
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonNotKnock)
		return func() { e.Decide(pkt, t0) }
	}},
	{"udp not knock ipv6", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := udpPkt(tb, client6, 123, []byte("ntp"))
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonNotKnock)
		return func() { e.Decide(pkt, t0) }
	}},
	{"non-syn tcp", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := tcpPkt(tb, client4, 22, verdict.TCPAck)
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonNotSYN)
		return func() { e.Decide(pkt, t0) }
	}},
	{"udp not knock", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := udpPkt(tb, client4, 53, []byte("q"))
		expectDecision(tb, e, pkt, t0, verdict.Accept, verdict.ReasonNotKnock)
		return func() { e.Decide(pkt, t0) }
	}},
	{"malformed", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := syn(tb, client4, 22)[:30]
		expectDecision(tb, e, pkt, t0, verdict.Drop, verdict.ReasonMalformed)
		return func() { e.Decide(pkt, t0) }
	}},
	{"ipv4-mapped source", func(tb testing.TB, e *verdict.Engine) func() {
		pkt := udpPkt(tb, mapped4, 9000, nil)
		expectDecision(tb, e, pkt, t0, verdict.Drop, verdict.ReasonMalformed)
		return func() { e.Decide(pkt, t0) }
	}},
	{"malformed empty", func(tb testing.TB, e *verdict.Engine) func() {
		expectDecision(tb, e, nil, t0, verdict.Drop, verdict.ReasonMalformed)
		return func() { e.Decide(nil, t0) }
	}},
}

func TestDecideNoAllocs(t *testing.T) {
	for _, p := range zeroAllocPaths {
		t.Run(p.name, func(t *testing.T) {
			f := p.setup(t, newEngine(t, testSet(t)))
			if n := testing.AllocsPerRun(1000, f); n != 0 {
				t.Errorf("Decide allocates %v times per run, want 0", n)
			}
		})
	}
}

func TestDecideNoAllocsRateLimited(t *testing.T) {
	// The same paths with the per-source knock rate limit on: the runs
	// soon exhaust the burst, so knocks take the rate-limited path.
	for _, p := range zeroAllocPaths {
		t.Run(p.name, func(t *testing.T) {
			tr, err := tracker.New(tracker.Config{MaxPending: 1024, MaxGrants: 1024, KnockRate: rules.DefaultKnockRate, KnockBurst: rules.DefaultKnockBurst})
			if err != nil {
				t.Fatal(err)
			}
			f := p.setup(t, verdict.New(testSet(t), tr, t0))
			if n := testing.AllocsPerRun(1000, f); n != 0 {
				t.Errorf("Decide allocates %v times per run, want 0", n)
			}
		})
	}
	t.Run("first knocks of new sources churning the buckets", func(t *testing.T) {
		// A table far smaller than the sources, IPv4 and IPv6 in many
		// /48s: every knock makes a bucket (and a /48's), evicts one and
		// remembers its debt.
		tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64, KnockRate: rules.DefaultKnockRate, KnockBurst: rules.DefaultKnockBurst})
		if err != nil {
			t.Fatal(err)
		}
		e := verdict.New(testSet(t), tr, t0)
		var pkts [][]byte
		for i, s := range manySources(2048) {
			pkts = append(pkts, syn(t, s, 7000))
			v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 7: byte(i), 15: 1})
			pkts = append(pkts, udpPkt(t, v6, 9000, nil))
		}
		expectDecision(t, e, pkts[0], t0, verdict.Reject, verdict.ReasonKnock)
		i := 0
		if n := testing.AllocsPerRun(10000, func() {
			e.Decide(pkts[i%len(pkts)], t0.Add(time.Duration(i)*time.Microsecond))
			i++
		}); n != 0 {
			t.Errorf("new sources' knocks allocate %v times, want 0", n)
		}
	})
	t.Run("knocks beyond the burst are rate limited", func(t *testing.T) {
		tr, err := tracker.New(tracker.Config{MaxPending: 1024, MaxGrants: 1024, KnockRate: 1, KnockBurst: 2})
		if err != nil {
			t.Fatal(err)
		}
		e := verdict.New(testSet(t), tr, t0)
		k := syn(t, client4, 7000)
		e.Decide(k, t0)
		e.Decide(k, t0)
		expectDecision(t, e, k, t0, verdict.Reject, verdict.ReasonRateLimited)
		if n := testing.AllocsPerRun(1000, func() { e.Decide(k, t0) }); n != 0 {
			t.Errorf("rate-limited knock allocates %v times, want 0", n)
		}
	})
}

// measuredPaths are the paths that create state. The first knock of a new
// source allocates nothing (the pending table is preallocated); a new grant
// allocates only when the grant map grows past its largest size so far
// (TestNewGrantsAllocs counts exactly).
var measuredPaths = []hotPath{
	{"first knock of a new source", func(tb testing.TB, e *verdict.Engine) func() {
		srcs := manySources(4096)
		pkts := make([][]byte, len(srcs))
		for i, s := range srcs {
			pkts[i] = syn(tb, s, 7000)
		}
		i := 0
		return func() {
			e.Decide(pkts[i%len(pkts)], t0)
			i++
		}
	}},
	{"last knock granting a new grant", func(tb testing.TB, e *verdict.Engine) func() {
		last := twoKnocks(tb, e, manySources(1100), t0)
		i := 0
		return func() {
			if d := e.Decide(last[i%len(last)], t0.Add(2*time.Second)); d.Knock.Event != tracker.EventGrant && i < len(last) {
				tb.Errorf("source %d: %v, want grant", i, d.Knock.Event)
			}
			i++
		}
	}},
}

// measuredMax bounds measuredPaths' allocations per packet, as
// testing.AllocsPerRun counts them: whole allocations per run, rounded
// down, so 0 means fewer than one per packet (TestNewGrantsAllocs counts
// the grant path exactly).
var measuredMax = map[string]float64{
	"first knock of a new source":     0,
	"last knock granting a new grant": 0,
}

// TestNewGrantsAllocs: once the grant table has held n grants, n new sources
// completing their sequences allocate almost nothing, counted exactly from
// the heap statistics rather than rounded per packet. The grant table is a
// Go map: it reuses the room of lapsed grants, but now and then rehashes a
// table that deletions filled with tombstones: the bound below is 1 in 64
// new grants, where an allocation per grant would be 64 times that.
func TestNewGrantsAllocs(t *testing.T) {
	const n = 2048
	tr, err := tracker.New(tracker.Config{MaxPending: 2 * n, MaxGrants: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	e := verdict.New(testSet(t), tr, t0)
	srcs := manySources(2 * n)
	lastKnocks := func(batch []netip.Addr, at time.Time) [][]byte { return twoKnocks(t, e, batch, at) }
	complete := func(last [][]byte, at time.Time) {
		for i, k := range last {
			if d := e.Decide(k, at); d.Knock.Event != tracker.EventGrant {
				t.Fatalf("source %d: %v, want a grant", i, d.Knock.Event)
			}
		}
	}
	// The first n grants, then they lapse.
	complete(lastKnocks(srcs[:n], t0), t0.Add(2*time.Second))
	later := t0.Add(time.Hour)
	if got := len(tr.Expire(later)); got != n {
		t.Fatalf("%d grants lapsed, want %d", got, n)
	}
	// n other sources: every last knock makes a new grant.
	// (Counted from the heap statistics: testing.AllocsPerRun would run
	// the batch twice, and the second time there is nothing new to grant.)
	last := lastKnocks(srcs[n:], later)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	complete(last, later.Add(2*time.Second))
	runtime.ReadMemStats(&after)
	allocs := after.Mallocs - before.Mallocs
	t.Logf("%d new grants: %d allocations", n, allocs)
	// The count is the whole process's (a test's helpers, the runtime),
	// so the bound leaves room for the odd background allocation: what it
	// rules out is an allocation per grant.
	if allocs > n/64 {
		t.Errorf("%d new grants allocated %d times, want at most %d", n, allocs, n/64)
	}
}

func TestDecideAllocsMeasured(t *testing.T) {
	for _, p := range measuredPaths {
		t.Run(p.name, func(t *testing.T) {
			tr, err := tracker.New(tracker.Config{MaxPending: 4096, MaxGrants: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			e := verdict.New(testSet(t), tr, t0)
			f := p.setup(t, e)
			n := testing.AllocsPerRun(1000, f)
			t.Logf("%s: %v allocs per packet", p.name, n)
			if want := measuredMax[p.name]; n > want {
				t.Errorf("%s: %v allocs per packet, want at most %v", p.name, n, want)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, p := range zeroAllocPaths {
		b.Run(p.name, func(b *testing.B) {
			f := p.setup(b, newEngine(b, testSet(b)))
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
	b.Run("first knock of a new source", func(b *testing.B) {
		// A table smaller than the sources cycled through, so every
		// source is new again when it comes round: a spoofed flood.
		tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64})
		if err != nil {
			b.Fatal(err)
		}
		e := verdict.New(testSet(b), tr, t0)
		srcs := manySources(4096)
		pkts := make([][]byte, len(srcs))
		for i, s := range srcs {
			pkts[i] = syn(b, s, 7000)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.Decide(pkts[i%len(pkts)], t0)
			i++
		}
	})
	b.Run("parallel mixed", func(b *testing.B) {
		e := newEngine(b, testSet(b))
		grant(b, e, client4)
		pkts := [][]byte{syn(b, client4, 22), syn(b, client4b, 22), syn(b, client6, 80), udpPkt(b, client6b, 53, nil)}
		now := t0.Add(3 * time.Second)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				e.Decide(pkts[i%len(pkts)], now)
				i++
			}
		})
	})
}

// TestZeroAllocPathsCompile keeps the measured set in step with the rules
// the paths assume.
func TestZeroAllocPathsCompile(t *testing.T) {
	set := testSet(t)
	if set.Services[0].Name != "db" || set.Services[1].Name != "ssh" {
		t.Fatalf("services %q, %q: the tests assume db 0, ssh 1", set.Services[0].Name, set.Services[1].Name)
	}
	if set.Cover(22) != 1<<1 || set.Cover(5432) != 1 || set.ClosedAction(1) != rules.ActionDrop {
		t.Fatal("test set is not what the tests assume")
	}
}
