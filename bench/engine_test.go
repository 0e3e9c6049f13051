package bench

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/knockwall/knockwall/internal/pkttest"
	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

var (
	server4  = netip.MustParseAddr("10.77.0.1")
	server6  = netip.MustParseAddr("fd00:77::1")
	granted4 = netip.MustParseAddr("10.77.0.2")
	granted6 = netip.MustParseAddr("fd00:77::2")
	other4   = netip.MustParseAddr("10.77.0.3")
	other6   = netip.MustParseAddr("fd00:77::3")
)

// spaSet is benchSet plus an SPA service, with its key.
func spaSet(tb testing.TB) (*rules.Set, *spa.Key) {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "k.key")
	k, err := spa.WriteNewKeyFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	c := rules.Defaults()
	c.Tracker.KnockRate = 0 // benchmarks replay one source far beyond any sane rate
	sd := rules.ServiceDefaults()
	ssh, web, adm := sd, sd, sd
	ssh.Ports, ssh.Sequence = []int{22}, []string{"7000", "8000", "9000/udp"}
	web.Ports, web.Sequence, web.Closed = []int{443, 8443}, []string{"10001/udp", "10002", "10003"}, rules.ClosedDrop
	adm.Ports = []int{2222}
	adm.SPA = rules.SPAConfig{Port: 62201, KeyFile: path, MaxSkew: 30 * time.Second}
	c.Services = map[string]rules.ServiceConfig{"ssh": ssh, "web": web, "adm": adm}
	set, err := rules.Compile(c, rules.WithKeyReader(spa.ReadKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	_ = os.Remove(path)
	return set, k
}

type engineCase struct {
	name string
	pkt  func(now time.Time) []byte // built once, before timing
	want verdict.Reason
}

// newEngine returns an engine in which granted4/granted6 hold grants for
// ssh and web, and other4/other6 are one knock into ssh's sequence.
func newEngine(tb testing.TB, set *rules.Set, now time.Time) *verdict.Engine {
	tb.Helper()
	tr, err := tracker.New(tracker.Config{MaxPending: 65536, MaxGrants: 1 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	// Started a minute before now: an engine refuses tokens stamped at or
	// before its start second, and the benchmarks' tokens are stamped now.
	e := verdict.New(set, tr, now.Add(-time.Minute))
	for _, src := range []netip.Addr{granted4, granted6} {
		for i := range set.Services {
			tr.Grant(src, set.Services[i].ID, now, time.Hour, 0, tracker.MethodSequence)
		}
	}
	return e
}

func engineCases(set *rules.Set, k *spa.Key) []engineCase {
	var cs []engineCase
	for _, fam := range []struct {
		name           string
		srv, ok, other netip.Addr
	}{{"v4", server4, granted4, other4}, {"v6", server6, granted6, other6}} {
		srv, ok, other := fam.srv, fam.ok, fam.other
		cs = append(cs,
			engineCase{name: fam.name + "/unprotected", pkt: func(time.Time) []byte { return pkttest.SYN(other, netip.AddrPortFrom(srv, 80)) }, want: verdict.ReasonUnprotected},
			engineCase{name: fam.name + "/granted", pkt: func(time.Time) []byte { return pkttest.SYN(ok, netip.AddrPortFrom(srv, 22)) }, want: verdict.ReasonGranted},
			engineCase{name: fam.name + "/no-grant-reject", pkt: func(time.Time) []byte { return pkttest.SYN(other, netip.AddrPortFrom(srv, 22)) }, want: verdict.ReasonNoGrant},
			engineCase{name: fam.name + "/no-grant-drop", pkt: func(time.Time) []byte { return pkttest.SYN(other, netip.AddrPortFrom(srv, 443)) }, want: verdict.ReasonNoGrant},
			engineCase{name: fam.name + "/knock", pkt: func(time.Time) []byte { return pkttest.SYN(other, netip.AddrPortFrom(srv, 7000)) }, want: verdict.ReasonKnock},
			engineCase{name: fam.name + "/malformed", pkt: func(time.Time) []byte { return pkttest.SYN(other, netip.AddrPortFrom(srv, 22))[:30] }, want: verdict.ReasonMalformed},
			// A new UDP flow that is no knock (diverted so that it resets
			// a source's progress).
			engineCase{name: fam.name + "/udp-not-knock", pkt: func(time.Time) []byte {
				return pkttest.Datagram(ok, netip.AddrPortFrom(srv, 53), []byte("q"))
			}, want: verdict.ReasonNotKnock},
			engineCase{name: fam.name + "/bad-token", pkt: func(time.Time) []byte {
				return pkttest.Datagram(other, netip.AddrPortFrom(srv, 62201), bytes.Repeat([]byte{'K'}, 80))
			}, want: verdict.ReasonBadToken},
		)
	}
	return cs
}

// BenchmarkDecide measures one decision on each path. The packet is built
// before timing; the engine's state does not change between iterations
// (the knock case is a first knock that begins a sequence again and again).
func BenchmarkDecide(b *testing.B) {
	set, k := spaSet(b)
	now := time.Now()
	for _, tc := range engineCases(set, k) {
		b.Run(tc.name, func(b *testing.B) {
			e := newEngine(b, set, now)
			pkt := tc.pkt(now)
			if d := e.Decide(pkt, now); d.Reason != tc.want {
				b.Fatalf("reason = %v, want %v", d.Reason, tc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(pkt, now)
			}
		})
	}
}

// BenchmarkDecideSequence: new sources, each completing ssh's sequence (two
// TCP knocks and one UDP knock) and then connecting. Reported per packet.
// Each completion creates a grant in a Go map, which allocates only when it
// grows or rehashes (verdict.TestNewGrantsAllocs counts it).
func BenchmarkDecideSequence(b *testing.B) {
	set, _ := spaSet(b)
	now := time.Now()
	e := newEngine(b, set, now)
	const n = 1 << 14
	pkts := make([][4][]byte, n)
	for i := range pkts {
		src := netip.AddrFrom4([4]byte{10, 78, byte(i >> 8), byte(i)})
		pkts[i] = [4][]byte{pkttest.SYN(src, netip.AddrPortFrom(server4, 7000)), pkttest.SYN(src, netip.AddrPortFrom(server4, 8000)), pkttest.Datagram(src, netip.AddrPortFrom(server4, 9000), nil), pkttest.SYN(src, netip.AddrPortFrom(server4, 22))}
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		p := &pkts[(i/4)%n]
		d := e.Decide(p[i%4], now)
		if i%4 == 3 && d.Reason != verdict.ReasonGranted {
			b.Fatalf("packet %d: %v", i, d.Reason)
		}
		i++
	}
}

// BenchmarkNewSourceFlood: every packet is the first knock of a source never
// seen before, the spoofed-flood path that churns the pending table.
func BenchmarkNewSourceFlood(b *testing.B) {
	set, _ := spaSet(b)
	now := time.Now()
	e := newEngine(b, set, now)
	const n = 1 << 16
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = pkttest.SYN(netip.AddrFrom4([4]byte{10, 79, byte(i >> 8), byte(i)}), netip.AddrPortFrom(server4, 7000))
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(pkts[i%n], now)
		i++
	}
}

// BenchmarkSPA: a valid token by UDP, fresh every iteration (tokens are
// single use), verified and granted. Token building is outside the timer.
func BenchmarkSPA(b *testing.B) {
	set, k := spaSet(b)
	now := time.Now()
	e := newEngine(b, set, now)
	const n = 4096
	pkts := make([][]byte, n)
	for i := range pkts {
		var nonce [spa.NonceSize]byte
		nonce[0], nonce[1], nonce[2] = byte(i), byte(i>>8), 0x5a
		tok, err := spa.Build(k, "adm", now.Unix(), nonce, netip.Addr{})
		if err != nil {
			b.Fatal(err)
		}
		pkts[i] = pkttest.Datagram(netip.AddrFrom4([4]byte{10, 80, byte(i >> 8), byte(i)}), netip.AddrPortFrom(server4, 62201), tok)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == n {
			b.StopTimer()
			e = newEngine(b, set, now) // a fresh replay cache for reused nonces
			i = 0
			b.StartTimer()
		}
		if d := e.Decide(pkts[i], now); d.Reason != verdict.ReasonToken {
			b.Fatalf("token %d: %v %v", i, d.Reason, d.TokenErr)
		}
		i++
	}
}

// BenchmarkDecideParallel: granted and unprotected SYNs from many sources
// on all cores. Run with -cpu 1,2: throughput should not fall with the
// second core (the tracker is sharded; no global lock).
func BenchmarkDecideParallel(b *testing.B) {
	set, _ := spaSet(b)
	now := time.Now()
	for _, kind := range []string{"granted", "unprotected", "knock"} {
		b.Run(kind, func(b *testing.B) {
			e := newEngine(b, set, now)
			const n = 1024
			pkts := make([][]byte, n)
			for i := range pkts {
				src := netip.AddrFrom4([4]byte{10, 81, byte(i >> 8), byte(i)})
				switch kind {
				case "granted":
					for s := range set.Services {
						e.Tracker().Grant(src, set.Services[s].ID, now, time.Hour, 0, tracker.MethodSequence)
					}
					pkts[i] = pkttest.SYN(src, netip.AddrPortFrom(server4, 22))
				case "unprotected":
					pkts[i] = pkttest.SYN(src, netip.AddrPortFrom(server4, 80))
				case "knock":
					pkts[i] = pkttest.SYN(src, netip.AddrPortFrom(server4, 7000))
				}
			}
			var worker atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(worker.Add(1)) * 7919
				for pb.Next() {
					e.Decide(pkts[i%n], now)
					i++
				}
			})
		})
	}
}

func TestEngineCasesReasons(t *testing.T) {
	set, k := spaSet(t)
	now := time.Now()
	for _, tc := range engineCases(set, k) {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, set, now)
			if d := e.Decide(tc.pkt(now), now); d.Reason != tc.want {
				t.Fatalf("reason = %v, want %v", d.Reason, tc.want)
			}
		})
	}
}

// BenchmarkParallelControl decodes one packet on all goroutines: no lock, no
// shared write. It tells what a second core can give on this machine at all,
// so BenchmarkDecideParallel's -cpu 1,2 ratios can be read against it.
func BenchmarkParallelControl(b *testing.B) {
	pkt := pkttest.SYN(other4, netip.AddrPortFrom(server4, 80))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var p verdict.Parsed
		for pb.Next() {
			p.Decode(pkt)
		}
	})
}
