package inet

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// seedPackets are the packets the committed corpora under testdata/fuzz
// hold too.
func seedPackets() [][]byte {
	return [][]byte{
		ipv6(ProtoTCP),
		ipv6(ProtoTCP, ext(ProtoHopByHop, 8), ext(ProtoDestOpts, 16)),
		ipv6(ProtoTCP, ext(ProtoAH, 24)),
		ipv6(ProtoUDP, ext(ProtoRouting, 24), ext(ProtoAH, 12)),
		ipv6(ProtoTCP, ext(ProtoFragment, 8)),
		ipv6(ProtoNoNext),
	}
}

// FuzzWalkIPv6 checks that the walk never panics, never writes to the
// packet, agrees with a plain reference walk, and that what it returns lies
// within the packet.
func FuzzWalkIPv6(f *testing.F) {
	for _, p := range seedPackets() {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		proto, off, ok := WalkIPv6(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("WalkIPv6 changed the packet")
		}
		rp, ro, rok := referenceWalk(b)
		if proto != rp || off != ro || ok != rok {
			t.Fatalf("WalkIPv6 = %d, %d, %v; the reference says %d, %d, %v", proto, off, ok, rp, ro, rok)
		}
		if !ok {
			if proto != 0 || off != 0 {
				t.Fatalf("not ok, but proto %d off %d", proto, off)
			}
			return
		}
		if off < IPv6HeaderLen || off > IPv6End(b) || off > len(b) {
			t.Fatalf("off %d outside [%d, %d]", off, IPv6HeaderLen, IPv6End(b))
		}
		switch proto {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts, ProtoAH, ProtoFragment, ProtoNoNext:
			t.Fatalf("upper layer %d is an extension header", proto)
		}
	})
}

// referenceWalk is WalkIPv6 written out the long way, one header at a time.
func referenceWalk(b []byte) (uint8, int, bool) {
	if len(b) < 40 {
		return 0, 0, false
	}
	end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) {
		end = len(b)
	}
	next, off := b[6], 40
	for n := 0; ; n++ {
		if next != 0 && next != 43 && next != 60 && next != 51 {
			if next == 44 || next == 59 {
				return 0, 0, false
			}
			return next, off, true
		}
		if n == MaxExtHeaders || off+8 > end {
			return 0, 0, false
		}
		var size int
		if next == 51 {
			size = 4*int(b[off+1]) + 8
		} else {
			size = 8*int(b[off+1]) + 8
		}
		if off+size > end {
			return 0, 0, false
		}
		next, off = b[off], off+size
	}
}

// FuzzChecksum checks that data carrying its own checksum verifies, and that
// the sum does not depend on where the data is split.
func FuzzChecksum(f *testing.F) {
	for _, p := range seedPackets() {
		f.Add(p, uint8(10))
	}
	f.Add([]byte{0xff, 0xff, 0xff}, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		if len(b) < 2 {
			return
		}
		c := (int(cut) % len(b)) &^ 1
		if Checksum(Sum(Sum(0, b[:c]), b[c:])) != Checksum(Sum(0, b)) {
			t.Fatalf("split at %d changes the sum", c)
		}
		// Put the checksum in the first two bytes: the whole verifies.
		d := bytes.Clone(b)
		d[0], d[1] = 0, 0
		binary.BigEndian.PutUint16(d, Checksum(Sum(0, d)))
		if got := Checksum(Sum(0, d)); got != 0 {
			t.Fatalf("data with its checksum sums to %#04x, want 0", got)
		}
	})
}
