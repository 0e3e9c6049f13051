package cluster

import (
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkSharedGrantMemory reports the heap a peer's grant costs the
// cluster's table (bytes/grant), beyond the tracker's own grant: b.N
// grants from one peer merged into a Core.
func BenchmarkSharedGrantMemory(b *testing.B) {
	host := newFakeHost()
	host.grants = nil // the host's copy is the tracker's, not the cluster's
	c := NewCore(Config{Name: "b", Clock: &fakeClock{t: t0}, Host: nopApply{host}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxSkew: 5 * time.Second, MaxEntries: b.N + 1, MaxTokens: 1})
	events := make([]Event, b.N)
	for i := range events {
		events[i] = Event{Kind: KindGrant, Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Service: "ssh", Hash: 1,
			Origin: "a", Seq: uint64(i + 1), Stamp: t0.UnixNano(), Expires: t0.Add(time.Hour).UnixNano(), Method: 1}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range events {
		c.Merge(Message{Sender: "a", Sent: t0.UnixNano(), Events: events[i : i+1]})
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), "bytes/grant")
	runtime.KeepAlive(c)
	runtime.KeepAlive(events) // made before the first reading: not counted
}

// nopApply is a host that applies nothing, so only the cluster's memory
// is counted.
type nopApply struct{ *fakeHost }

func (nopApply) ApplyGrant(Grant) error { return nil }
