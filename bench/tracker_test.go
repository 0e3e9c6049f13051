package bench

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/tracker"
)

// benchSet is a realistic configuration: two services, mixed knocks.
func benchSet(tb testing.TB, maxPending, maxGrants int) *rules.Set {
	tb.Helper()
	c := rules.Defaults()
	c.Tracker.MaxPending = maxPending
	c.Tracker.MaxGrants = maxGrants
	sd := rules.ServiceDefaults()
	ssh, web := sd, sd
	ssh.Ports, ssh.Sequence = []int{22}, []string{"7000", "8000", "9000/udp"}
	web.Ports, web.Sequence = []int{443, 8443}, []string{"10001/udp", "10002", "10003"}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh, "web": web}
	set, err := rules.Compile(c)
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

func addrN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkTrackerPending fills the pending cache with n sources, each one
// knock into a sequence, and reports the heap cost per source.
func BenchmarkTrackerPending(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("sources=%d", n), func(b *testing.B) {
			set := benchSet(b, n, 1024)
			first := rules.KnockKey(rules.ProtoTCP, 7000)
			now := time.Unix(1_700_000_000, 0)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			tr, err := tracker.New(tracker.Config{MaxPending: n, MaxGrants: 1024})
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				tr.Observe(addrN(i), first, now, set)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			// Capacity is split over shards, each evicting on its own, so a
			// few sources may have been evicted near the bound.
			held := tr.Stats().Pending
			if held < n*9/10 {
				b.Fatalf("pending = %d, want about %d", held, n)
			}
			perSource := float64(after.HeapAlloc-before.HeapAlloc) / float64(held)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tr.Observe(addrN(i%n), first, now, set)
			}
			b.StopTimer()
			b.ReportMetric(perSource, "B/source")
			runtime.KeepAlive(tr)
		})
	}
}
