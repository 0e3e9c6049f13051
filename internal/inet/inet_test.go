package inet

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	src4 = netip.MustParseAddr("192.0.2.10")
	dst4 = netip.MustParseAddr("198.51.100.1")
	src6 = netip.MustParseAddr("2001:db8::10")
	dst6 = netip.MustParseAddr("2001:db8:ffff::1")
)

// ipv6 builds an IPv6 packet whose payload is the extension headers ext
// (each a whole header, its first byte the next header, overwritten here to
// chain them) followed by an upper-layer header of protocol last, 20 bytes.
func ipv6(last uint8, ext ...[]byte) []byte {
	b := make([]byte, IPv6HeaderLen)
	b[0] = 0x60
	copy(b[8:], src6.AsSlice())
	copy(b[24:], dst6.AsSlice())
	at := 6 // where the current next-header field is
	for _, e := range ext {
		b[at] = e[0] // the caller put the header's own protocol number in e[0]
		at = len(b)
		b = append(b, e...)
	}
	b[at] = last
	b = append(b, make([]byte, 20)...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-IPv6HeaderLen))
	return b
}

// ext is an extension header of protocol proto and total length n bytes,
// with its length field set the way proto counts it. The first byte holds
// proto until ipv6 chains it.
func ext(proto uint8, n int) []byte {
	e := make([]byte, n)
	e[0] = proto
	if proto == ProtoAH {
		e[1] = byte(n/4 - 2)
	} else {
		e[1] = byte(n/8 - 1)
	}
	return e
}

func TestWalkIPv6(t *testing.T) {
	tooMany := make([][]byte, MaxExtHeaders+1)
	for i := range tooMany {
		tooMany[i] = ext(ProtoDestOpts, 8)
	}
	atMost := tooMany[:MaxExtHeaders]
	edit := func(b []byte, f func([]byte)) []byte { f(b); return b }
	tests := []struct {
		name  string
		pkt   []byte
		proto uint8
		off   int
		ok    bool
	}{
		{name: "tcp", pkt: ipv6(ProtoTCP), proto: ProtoTCP, off: 40, ok: true},
		{name: "udp", pkt: ipv6(ProtoUDP), proto: ProtoUDP, off: 40, ok: true},
		{name: "hop-by-hop", pkt: ipv6(ProtoTCP, ext(ProtoHopByHop, 8)), proto: ProtoTCP, off: 48, ok: true},
		{name: "routing", pkt: ipv6(ProtoTCP, ext(ProtoRouting, 24)), proto: ProtoTCP, off: 64, ok: true},
		{name: "destination options", pkt: ipv6(ProtoUDP, ext(ProtoDestOpts, 16)), proto: ProtoUDP, off: 56, ok: true},
		{name: "ah, 4-byte units plus 2", pkt: ipv6(ProtoTCP, ext(ProtoAH, 24)), proto: ProtoTCP, off: 64, ok: true},
		{name: "ah of 12 bytes", pkt: ipv6(ProtoTCP, ext(ProtoAH, 12)), proto: ProtoTCP, off: 52, ok: true},
		{name: "hop-by-hop, ah, destination options", pkt: ipv6(ProtoTCP, ext(ProtoHopByHop, 8), ext(ProtoAH, 24), ext(ProtoDestOpts, 8)), proto: ProtoTCP, off: 80, ok: true},
		{name: "as many as allowed", pkt: ipv6(ProtoTCP, atMost...), proto: ProtoTCP, off: 40 + 8*MaxExtHeaders, ok: true},
		{name: "esp is upper layer to us", pkt: ipv6(ProtoESP), proto: ProtoESP, off: 40, ok: true},
		{name: "fragment", pkt: ipv6(ProtoTCP, ext(ProtoFragment, 8))},
		{name: "fragment after options", pkt: ipv6(ProtoTCP, ext(ProtoDestOpts, 8), ext(ProtoFragment, 8))},
		{name: "no next header", pkt: ipv6(ProtoNoNext)},
		{name: "too many", pkt: ipv6(ProtoTCP, tooMany...)},
		{name: "short", pkt: ipv6(ProtoTCP)[:39]},
		{name: "empty", pkt: nil},
		{name: "header cut by the buffer", pkt: ipv6(ProtoTCP, ext(ProtoHopByHop, 8))[:47]},
		{name: "header length past the end", pkt: edit(ipv6(ProtoTCP, ext(ProtoHopByHop, 8)), func(b []byte) { b[41] = 200 })},
		{name: "ah length past the end", pkt: edit(ipv6(ProtoTCP, ext(ProtoAH, 24)), func(b []byte) { b[41] = 200 })},
		{name: "header past the payload length", pkt: edit(ipv6(ProtoTCP, ext(ProtoHopByHop, 8)), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 4) })},
		{name: "upper layer at the payload's end", pkt: edit(ipv6(ProtoTCP, ext(ProtoHopByHop, 8)), func(b []byte) { binary.BigEndian.PutUint16(b[4:], 8) }), proto: ProtoTCP, off: 48, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proto, off, ok := WalkIPv6(tt.pkt)
			if proto != tt.proto || off != tt.off || ok != tt.ok {
				t.Errorf("WalkIPv6 = %d, %d, %v; want %d, %d, %v", proto, off, ok, tt.proto, tt.off, tt.ok)
			}
			if ok && off > IPv6End(tt.pkt) {
				t.Errorf("off %d beyond the packet's end %d", off, IPv6End(tt.pkt))
			}
		})
	}
}

// TestWalkIPv6Gopacket: the walk agrees with gopacket on packets it builds.
func TestWalkIPv6Gopacket(t *testing.T) {
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolIPv6HopByHop, HopLimit: 64, SrcIP: src6.AsSlice(), DstIP: dst6.AsSlice()}
	hop := &layers.IPv6HopByHop{}
	hop.NextHeader = layers.IPProtocolIPv6Destination
	hop.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
	dst := &layers.IPv6Destination{}
	dst.NextHeader = layers.IPProtocolTCP
	dst.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 12, OptionData: make([]byte, 12)}}
	tcp := &layers.TCP{SrcPort: 1, DstPort: 22, SYN: true}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, hop, dst, tcp); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPv6, gopacket.Default)
	want := len(b) - len(pkt.Layer(layers.LayerTypeTCP).LayerContents())
	if proto, off, ok := WalkIPv6(b); proto != ProtoTCP || off != want || !ok {
		t.Errorf("WalkIPv6 = %d, %d, %v; want TCP at %d", proto, off, ok, want)
	}
}

// TestChecksumRFC1071 is the worked example of RFC 1071, section 3.
func TestChecksumRFC1071(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Checksum(Sum(0, b)); got != ^uint16(0xddf2) {
		t.Errorf("Checksum = %#04x, want %#04x", got, ^uint16(0xddf2))
	}
}

// TestSumPieces: summing in pieces of even length, or with an odd last
// piece, is summing the whole.
func TestSumPieces(t *testing.T) {
	b := make([]byte, 257)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	whole := Checksum(Sum(0, b))
	for cut := 0; cut <= len(b); cut += 2 {
		if got := Checksum(Sum(Sum(0, b[:cut]), b[cut:])); got != whole {
			t.Fatalf("cut at %d: %#04x, want %#04x", cut, got, whole)
		}
	}
	// Padding an odd length with a zero byte changes nothing.
	if got := Checksum(Sum(0, append(b[:len(b):len(b)], 0))); got != whole {
		t.Errorf("padded: %#04x, want %#04x", got, whole)
	}
}

// TestChecksumGopacket: TCP, UDP and IPv4 header checksums equal gopacket's,
// over both families, with odd and even payloads.
func TestChecksumGopacket(t *testing.T) {
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
	}{{"ipv4", src4, dst4}, {"ipv6", src6, dst6}} {
		for _, payload := range [][]byte{nil, []byte("k"), []byte("token!"), make([]byte, 1001)} {
			for _, proto := range []layers.IPProtocol{layers.IPProtocolTCP, layers.IPProtocolUDP} {
				var network gopacket.NetworkLayer
				var ipLayer gopacket.SerializableLayer
				if fam.src.Is4() {
					ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.IP(fam.src.AsSlice()), DstIP: net.IP(fam.dst.AsSlice())}
					network, ipLayer = ip, ip
				} else {
					ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.IP(fam.src.AsSlice()), DstIP: net.IP(fam.dst.AsSlice())}
					network, ipLayer = ip, ip
				}
				var l4 gopacket.SerializableLayer
				csum := 16
				if proto == layers.IPProtocolTCP {
					tcp := &layers.TCP{SrcPort: 40000, DstPort: 22, Seq: 0xdeadbeef, SYN: true, Window: 64240}
					if err := tcp.SetNetworkLayerForChecksum(network); err != nil {
						t.Fatal(err)
					}
					l4 = tcp
				} else {
					udp := &layers.UDP{SrcPort: 40000, DstPort: 62201}
					if err := udp.SetNetworkLayerForChecksum(network); err != nil {
						t.Fatal(err)
					}
					l4, csum = udp, 6
				}
				buf := gopacket.NewSerializeBuffer()
				if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ipLayer, l4, gopacket.Payload(payload)); err != nil {
					t.Fatal(err)
				}
				b := buf.Bytes()
				hl := IPv6HeaderLen
				if fam.src.Is4() {
					hl = 20
					want := binary.BigEndian.Uint16(b[10:])
					h := append([]byte(nil), b[:20]...)
					binary.BigEndian.PutUint16(h[10:], 0)
					if got := Checksum(Sum(0, h)); got != want {
						t.Errorf("%s: IPv4 header checksum %#04x, want %#04x", fam.name, got, want)
					}
					if Checksum(Sum(0, b[:20])) != 0 {
						t.Errorf("%s: IPv4 header with its checksum does not verify", fam.name)
					}
				}
				seg := append([]byte(nil), b[hl:]...)
				want := binary.BigEndian.Uint16(seg[csum:])
				binary.BigEndian.PutUint16(seg[csum:], 0)
				got := Checksum(Sum(Pseudo(fam.src, fam.dst, uint8(proto), len(seg)), seg))
				if proto == layers.IPProtocolUDP {
					got = UDPChecksum(got)
				}
				if got != want {
					t.Errorf("%s %v, %d-byte payload: checksum %#04x, want gopacket's %#04x", fam.name, proto, len(payload), got, want)
				}
			}
		}
	}
}

func TestUDPChecksum(t *testing.T) {
	if UDPChecksum(0) != 0xffff || UDPChecksum(0x1234) != 0x1234 {
		t.Error("UDPChecksum: 0 must go out as 0xffff, others unchanged")
	}
}

func TestNoAllocs(t *testing.T) {
	pkt := ipv6(ProtoTCP, ext(ProtoHopByHop, 8), ext(ProtoAH, 24))
	var sink uint16
	if n := testing.AllocsPerRun(100, func() {
		_, off, _ := WalkIPv6(pkt)
		sink += Checksum(Sum(Pseudo(src6, dst6, ProtoTCP, len(pkt)-off), pkt[off:]))
		sink += Checksum(Sum(Pseudo(src4, dst4, ProtoUDP, 8), pkt[:8]))
	}); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
	_ = sink
}

func BenchmarkChecksum(b *testing.B) {
	seg := make([]byte, 60)
	b.ReportAllocs()
	for b.Loop() {
		Checksum(Sum(Pseudo6(src6.As16(), dst6.As16(), ProtoTCP, len(seg)), seg))
	}
}
