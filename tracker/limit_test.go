package tracker_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// Knock-rate limits, stepped with a fake clock (times passed in; nothing
// sleeps).

func limiter(t testing.TB, maxPending int, rate float64, burst int) *tracker.Tracker {
	t.Helper()
	tr, err := tracker.New(tracker.Config{MaxPending: maxPending, MaxGrants: 64, KnockRate: rate, KnockBurst: burst})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// allowN makes n knock attempts from src at now and counts those allowed.
func allowN(tr *tracker.Tracker, src netip.Addr, n int, now time.Time) int {
	ok := 0
	for range n {
		if tr.Allow(src, now) {
			ok++
		}
	}
	return ok
}

// spoofed is the i-th of many distinct spoofed IPv4 sources in 10.78.0.0/15
// and beyond.
func spoofed(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(78 + i>>16), byte(i >> 8), byte(i)})
}

// flood makes one knock attempt from each of n new spoofed sources, starting
// at spoofed(from), spread evenly over [start, start+span).
func flood(tr *tracker.Tracker, from, n int, start time.Time, span time.Duration) {
	for i := range n {
		tr.Allow(spoofed(from+i), start.Add(span*time.Duration(i)/time.Duration(n)))
	}
}

// in48 is the /64 number i of the /48 2001:db8:aa::/48 (or of prefix48's
// /48 when given), with host bits set.
func in48(prefix48 uint16, i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(prefix48 >> 8), byte(prefix48), 6: byte(i >> 8), 7: byte(i), 15: 1})
}

// TestAllowNewBucketNotFull: a new source may knock
// min(NewBucketKnocks, knock_burst) times at once, not knock_burst times;
// given time, its bucket fills to knock_burst.
func TestAllowNewBucketNotFull(t *testing.T) {
	for _, tt := range []struct {
		name        string
		rate        float64
		burst, want int
	}{
		{"defaults", rules.DefaultKnockRate, rules.DefaultKnockBurst, tracker.NewBucketKnocks},
		{"burst below the new-bucket level", 2, 5, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := limiter(t, 1024, tt.rate, tt.burst)
			if got := allowN(tr, src, 100, t0); got != tt.want {
				t.Errorf("a new source was allowed %d knocks at once, want %d", got, tt.want)
			}
			if got := allowN(tr, src6, 100, t0); got != tt.want {
				t.Errorf("a new IPv6 source was allowed %d knocks at once, want %d", got, tt.want)
			}
			// Long idle: the bucket is full.
			later := t0.Add(time.Hour)
			if got := allowN(tr, src, 100, later); got != tt.burst {
				t.Errorf("after an hour: %d knocks at once, want the burst of %d", got, tt.burst)
			}
		})
	}
}

// TestAllowEvictionGivesNothingBack: a source that spent its budget and then
// pushes its own bucket out of the table with spoofed new sources (any
// number of them, again and again) gets back only what refilling gives over
// the time it took, not a new bucket's worth each time. Over IPv4 and IPv6,
// for a small table and the default one.
func TestAllowEvictionGivesNothingBack(t *testing.T) {
	const rate = 10 // knocks per second: one per 100ms
	for _, tt := range []struct {
		name       string
		attacker   netip.Addr
		maxPending int
		spoof      int // spoofed sources per round, each evicting
		rounds     int
	}{
		{"ipv4, small table", src, 64, 2000, 10},
		{"ipv6, small table", src6, 64, 2000, 10},
		{"ipv4, default table", src, rules.DefaultMaxPending, 2 * rules.DefaultMaxPending, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := limiter(t, tt.maxPending, rate, rules.DefaultKnockBurst)
			if got := allowN(tr, tt.attacker, 100, t0); got != tracker.NewBucketKnocks {
				t.Fatalf("first burst: %d allowed, want %d", got, tracker.NewBucketKnocks)
			}
			// Round after round: evict, then knock as much as allowed.
			const step = 250 * time.Millisecond
			rounds := tt.rounds
			got, next := 0, 0
			now := t0
			for range rounds {
				flood(tr, next, tt.spoof, now, step)
				next += tt.spoof
				now = now.Add(step)
				got += allowN(tr, tt.attacker, 100, now)
			}
			// Refilling alone gives rate × elapsed, and the last round's
			// fraction is lost.
			want := int(rate * (time.Duration(rounds) * step).Seconds())
			t.Logf("%d knocks allowed over %v of self-eviction; refilling gives %d; a new bucket per round would give %d",
				got, time.Duration(rounds)*step, want, rounds*tracker.NewBucketKnocks)
			if got > want {
				t.Errorf("%d knocks allowed, more than the %d refilling gives", got, want)
			}
			if st := tr.Stats(); st.Limited == 0 {
				t.Error("no knock was limited")
			}
		})
	}
}

// TestAllowPrefix48: hopping through the /64s of one /48 buys at most
// Prefix48Hosts new buckets' worth at once and Prefix48Hosts hosts' refill
// after, also when the /48's own bucket is pushed out of the table;
// another /48 has a budget of its own.
func TestAllowPrefix48(t *testing.T) {
	const rate = 10
	perHost := tracker.NewBucketKnocks // a new bucket's knocks
	for _, tt := range []struct {
		name       string
		maxPending int
		spoof      int // spoofed IPv4 sources between hops, to evict
	}{
		{"default table", rules.DefaultMaxPending, 0},
		{"small table, evicted between hops", 64, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr := limiter(t, tt.maxPending, rate, rules.DefaultKnockBurst)
			got := 0
			for i := range 1 << 16 {
				if tr.Allow(in48(0xaa, i), t0) {
					got++
				}
				if tt.spoof > 0 && i%1024 == 0 {
					flood(tr, i*tt.spoof, tt.spoof, t0, 0)
				}
			}
			// Evicting the /48's bucket may forget a debt smaller than
			// the one-knock debts of the spoofed sources, at most one
			// /48 knock (1/Prefix48Hosts of a host's) per round.
			rounds := 0
			if tt.spoof > 0 {
				rounds = 1 << 16 / 1024
			}
			t.Logf("one knock from each of the 65536 /64s of a /48: %d allowed", got)
			if want := tracker.Prefix48Hosts*perHost + rounds; got > want {
				t.Errorf("one knock from each of the 65536 /64s of a /48: %d allowed, want at most %d", got, want)
			}
			// A second later, the /48 has refilled a second's worth for
			// Prefix48Hosts hosts.
			got = 0
			for i := range 1 << 16 {
				if tr.Allow(in48(0xaa, 1<<16-1-i), t0.Add(time.Second)) {
					got++
				}
			}
			if want := tracker.Prefix48Hosts * rate; got > want {
				t.Errorf("a second later: %d allowed, want at most %d", got, want)
			}
			// Another /48 is not charged for the first.
			if got := allowN(tr, in48(0xbb, 1), 100, t0.Add(time.Second)); got != perHost {
				t.Errorf("a /64 of another /48: %d allowed, want a new bucket's %d", got, perHost)
			}
		})
	}
	t.Run("many hosts of one /48 side by side", func(t *testing.T) {
		tr := limiter(t, rules.DefaultMaxPending, rate, rules.DefaultKnockBurst)
		// Prefix48Hosts hosts each send a 5-knock sequence at once.
		for h := range tracker.Prefix48Hosts {
			if got := allowN(tr, in48(0xcc, h), 5, t0); got != 5 {
				t.Errorf("host %d of the /48: %d of 5 knocks allowed", h, got)
			}
		}
	})
}

// TestAllowNewClientUnderFlood: a new client sends a normal sequence, five
// knocks 10ms apart as `knockwall knock` does, while spoofed one-knock
// sources churn the table at 175k/s (the flood tests' rate): all five pass,
// on every try. Between tries the client's bucket is evicted and made anew.
// A client's own earlier try, long enough ago, leaves nothing to repay.
func TestAllowNewClientUnderFlood(t *testing.T) {
	const (
		floodRate = 175_000 // spoofed sources per second
		gap       = 10 * time.Millisecond
		knocks    = 5
		tries     = 9
		tryEvery  = 350 * time.Millisecond // the flood tests' pace: open_for + slack
	)
	tr := limiter(t, 1024, rules.DefaultKnockRate, rules.DefaultKnockBurst)
	clients := []netip.Addr{src, src2, src6}
	perGap := int(floodRate * gap.Seconds())
	now, next := t0, 0
	for try := range tries {
		c := clients[try%len(clients)]
		// The flood runs until the try.
		flood(tr, next, int(floodRate*tryEvery.Seconds()), now, tryEvery)
		next += int(floodRate * tryEvery.Seconds())
		now = now.Add(tryEvery)
		for k := range knocks {
			if !tr.Allow(c, now) {
				t.Fatalf("try %d from %v: knock %d of %d refused under the flood", try, c, k+1, knocks)
			}
			flood(tr, next, perGap, now, gap)
			next += perGap
			now = now.Add(gap)
		}
	}
}

// TestAllowNoAllocs: knocks from new sources into full tables (evictions,
// remembered debts, /48 buckets) allocate nothing.
func TestAllowNoAllocs(t *testing.T) {
	tr := limiter(t, 256, rules.DefaultKnockRate, rules.DefaultKnockBurst)
	i := 0
	if n := testing.AllocsPerRun(10000, func() {
		i++
		tr.Allow(spoofed(i), t0)
		tr.Allow(in48(uint16(i), i), t0)
	}); n != 0 {
		t.Fatalf("Allow allocates %v times per call pair, want 0", n)
	}
}
