package verdict_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/knockwall/knockwall/rules"
	"github.com/knockwall/knockwall/spa"
	"github.com/knockwall/knockwall/tracker"
	"github.com/knockwall/knockwall/verdict"
)

// seedPackets are real packets for the fuzzers to start from. The committed
// corpora under testdata/fuzz hold the same packets.
func seedPackets(tb testing.TB) [][]byte {
	return [][]byte{
		syn(tb, client4, 22),
		spec{src: client4, dst: server4, sport: 51000, dport: 7000, flags: verdict.TCPSyn, tcpOpts: synOptions}.tcp(tb),
		udpPkt(tb, client4, 9000, []byte("knock")),
		syn(tb, client6, 22),
		udpPkt(tb, client6, 6000, nil),
		spec{src: client6, dst: server6, sport: 1, dport: 22, flags: verdict.TCPSyn, ext: extHeaders()}.tcp(tb),
		withAH(syn(tb, client6, 22)),
		udpPkt(tb, mapped4, 9000, nil),
		tcpPkt(tb, client4, 22, verdict.TCPSyn|verdict.TCPAck),
		icmp4(tb),
		syn(tb, client4, 22)[:30],
	}
}

// FuzzDecode checks that Decode never panics, never writes to the packet,
// and that whatever it calls valid lies within the buffer where the headers
// say it does.
func FuzzDecode(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		var p verdict.Parsed
		p.Decode(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("Decode changed the packet")
		}
		var again verdict.Parsed
		again.Decode(b)
		if again != p {
			t.Fatalf("Decode is not deterministic: %+v then %+v", p, again)
		}
		if !p.Valid() {
			if p.IPProto != 0 || p.PayloadOff != 0 || p.PayloadLen != 0 || p.SrcPort != 0 || p.DstPort != 0 || p.TCPFlags != 0 {
				t.Fatalf("invalid packet with transport fields set: %+v", p)
			}
			return
		}
		if p.IPVersion != b[0]>>4 || (p.IPVersion != 4 && p.IPVersion != 6) {
			t.Fatalf("IPVersion %d for first byte %#x", p.IPVersion, b[0])
		}
		if p.PayloadOff < 0 || p.PayloadLen < 0 || p.PayloadOff+p.PayloadLen > len(b) {
			t.Fatalf("payload %d+%d outside a %d-byte buffer", p.PayloadOff, p.PayloadLen, len(b))
		}
		_ = b[p.PayloadOff : p.PayloadOff+p.PayloadLen] // what Decide slices
		minTransport := 8
		if p.IPProto == 6 {
			minTransport = 20
		}
		var transportOff int
		switch p.IPVersion {
		case 4:
			ihl := int(b[0]&0x0f) * 4
			if ihl < 20 || ihl+minTransport > len(b) {
				t.Fatalf("valid IPv4 with ihl %d and %d bytes", ihl, len(b))
			}
			if got := netip.AddrFrom4([4]byte(b[12:16])); p.Src != got || p.Dst != netip.AddrFrom4([4]byte(b[16:20])) {
				t.Fatalf("addresses %v > %v, header says %v", p.Src, p.Dst, got)
			}
			if frag := binary.BigEndian.Uint16(b[6:8]) & 0x3fff; frag != 0 {
				t.Fatalf("fragment (%#x) decoded as valid", frag)
			}
			if b[9] != p.IPProto {
				t.Fatalf("IPProto %d, header says %d", p.IPProto, b[9])
			}
			transportOff = ihl
		case 6:
			if len(b) < 40+minTransport {
				t.Fatalf("valid IPv6 in %d bytes", len(b))
			}
			if p.Src != netip.AddrFrom16([16]byte(b[8:24])) || p.Dst != netip.AddrFrom16([16]byte(b[24:40])) {
				t.Fatalf("addresses %v > %v do not match the header", p.Src, p.Dst)
			}
			if p.Src.Is4In6() {
				t.Fatalf("valid packet from the IPv4-mapped source %v", p.Src)
			}
			if b[6] != 6 && b[6] != 17 {
				// Extension headers: the transport header is further in.
				if p.PayloadOff < 40+8+minTransport && p.PayloadOff != len(b) {
					t.Fatalf("payload at %d, before any transport header could end", p.PayloadOff)
				}
				return
			}
			if b[6] != p.IPProto {
				t.Fatalf("IPProto %d, header says %d", p.IPProto, b[6])
			}
			transportOff = 40
		}
		if p.PayloadOff < transportOff+minTransport && p.PayloadOff != len(b) {
			t.Fatalf("payload at %d, inside the transport header at %d", p.PayloadOff, transportOff)
		}
		if sp := binary.BigEndian.Uint16(b[transportOff:]); sp != p.SrcPort {
			t.Fatalf("SrcPort %d, header says %d", p.SrcPort, sp)
		}
		if dp := binary.BigEndian.Uint16(b[transportOff+2:]); dp != p.DstPort {
			t.Fatalf("DstPort %d, header says %d", p.DstPort, dp)
		}
		if p.IPProto == 6 && b[transportOff+13] != p.TCPFlags {
			t.Fatalf("TCPFlags %#x, header says %#x", p.TCPFlags, b[transportOff+13])
		}
	})
}

// fuzzKey is the SPA and rotation key of fuzzSet.
var fuzzKey = func() *spa.Key {
	k, err := spa.NewKey(bytes.Repeat([]byte{0x42}, spa.MinKeySize))
	if err != nil {
		panic(err)
	}
	return k
}()

// fuzzSet is testSet plus a service that opens by SPA (UDP 62201 or a token
// in the SYN) and by a rotating sequence in 40000-40099, so that the fuzzer
// reaches every branch of the engine.
func fuzzSet(tb testing.TB) *rules.Set {
	tb.Helper()
	c := testConfig()
	c.Tracker.MaxPending, c.Tracker.MaxGrants, c.Tracker.MaxNonces = 64, 64, 64
	web := rules.ServiceDefaults()
	web.Ports = []int{443}
	web.SPA.Port = 62201
	web.SPA.KeyFile = "web.key"
	web.Rotate.Length = 5 // 100·99^4 sequences: at least 2^32 (rules.MinRotateBits)
	web.Rotate.Range = []int{40000, 40099}
	c.Services["web"] = web
	set, err := rules.Compile(c, rules.WithKeyReader(func(string) (*spa.Key, error) { return fuzzKey, nil }))
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

// fuzzStart is when the fuzzers' engines start: before t0, so that a token
// stamped at t0 is not refused as older than the engine.
var fuzzStart = t0.Add(-time.Minute)

// spaToken is a valid token for service web at t0.
func spaToken(tb testing.TB) []byte {
	tok, err := spa.Build(fuzzKey, "web", t0.Unix(), [spa.NonceSize]byte{1, 2, 3}, netip.Addr{})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// FuzzDecide runs the engine on arbitrary bytes at an arbitrary time: it
// must never panic, a packet Decode cannot use is always dropped as
// malformed, nothing gets a verdict or reason without a name, and no single
// packet opens a protected port on a fresh engine.
func FuzzDecide(f *testing.F) {
	for _, p := range seedPackets(f) {
		f.Add(p, uint32(0))
	}
	for _, k := range sshKnocks(f, client4) {
		f.Add(k, uint32(1000))
	}
	f.Add(udpPkt(f, client4, 62201, spaToken(f)), uint32(0))
	f.Add(spec{src: client6, dst: server6, sport: 5, dport: 443, flags: verdict.TCPSyn, payload: spaToken(f)}.tcp(f), uint32(0))
	f.Add(syn(f, client4, 40042), uint32(0))

	set := fuzzSet(f)
	accepting := map[verdict.Reason]bool{
		verdict.ReasonUnprotected: true, verdict.ReasonGranted: true, verdict.ReasonNotSYN: true, verdict.ReasonNotKnock: true,
	}
	f.Fuzz(func(t *testing.T, b []byte, ms uint32) {
		tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64})
		if err != nil {
			t.Fatal(err)
		}
		e := verdict.New(set, tr, fuzzStart)
		var p verdict.Parsed
		p.Decode(b)
		for i, now := range []time.Time{t0, t0.Add(time.Duration(ms) * time.Millisecond)} {
			d := e.Decide(b, now)
			if d.Verdict.String() == "unknown" || d.Reason.String() == "unknown" {
				t.Fatalf("decision %d: unnamed verdict %d or reason %d", i, d.Verdict, d.Reason)
			}
			if !p.Valid() {
				if d.Verdict != verdict.Drop || d.Reason != verdict.ReasonMalformed {
					t.Fatalf("malformed packet got %v/%v", d.Verdict, d.Reason)
				}
				continue
			}
			if d.Reason == verdict.ReasonMalformed {
				t.Fatalf("valid packet %+v called malformed", p)
			}
			if d.Verdict == verdict.Accept && !accepting[d.Reason] {
				t.Fatalf("accepted with reason %v", d.Reason)
			}
			if d.Verdict != verdict.Accept && accepting[d.Reason] {
				t.Fatalf("%v with reason %v", d.Verdict, d.Reason)
			}
			if i == 0 && d.Reason == verdict.ReasonGranted {
				t.Fatalf("a single packet opened port %d on a fresh engine", d.Port)
			}
			if d.Src != p.Src || d.Port != p.DstPort || d.Proto != p.IPProto {
				t.Fatalf("decision %v port %d proto %d for packet %+v", d.Src, d.Port, d.Proto, p)
			}
		}
	})
}

// TestFuzzSeedsReachTheirPaths checks that the SPA and rotating seeds of
// FuzzDecide take the paths they are there for.
func TestFuzzSeedsReachTheirPaths(t *testing.T) {
	tests := []struct {
		name   string
		pkt    []byte
		reason verdict.Reason
	}{
		{"token datagram", udpPkt(t, client4, 62201, spaToken(t)), verdict.ReasonToken},
		{"token in a syn", spec{src: client6, dst: server6, sport: 5, dport: 443, flags: verdict.TCPSyn, payload: spaToken(t)}.tcp(t), verdict.ReasonToken},
		{"garbage to the spa port", udpPkt(t, client4, 62201, []byte("KW")), verdict.ReasonBadToken},
		{"rotating range", syn(t, client4, 40042), verdict.ReasonKnock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := tracker.New(tracker.Config{MaxPending: 64, MaxGrants: 64})
			if err != nil {
				t.Fatal(err)
			}
			e := verdict.New(fuzzSet(t), tr, fuzzStart)
			if d := e.Decide(tt.pkt, t0); d.Reason != tt.reason || d.Verdict != verdict.Reject {
				t.Errorf("%v/%v (token error %v), want reject/%v", d.Verdict, d.Reason, d.TokenErr, tt.reason)
			}
		})
	}
}
