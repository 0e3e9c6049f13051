package rst

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/internal/inet"
	"github.com/knockwall/knockwall/internal/pkttest"
)

// synV6 is an IPv6 SYN from [fd00:77::2]:40001 to [fd00:77::1]:2222 with
// traffic class tclass, ECE and CWR, and payload; with opts, an MSS option.
func synV6(tclass uint8, payload []byte, opts bool) []byte {
	ip := pkttest.IP{Src: netip.MustParseAddr("fd00:77::2"), Dst: netip.MustParseAddr("fd00:77::1"), TOS: tclass, FlowLabel: 0x12345}
	tcp := pkttest.TCP{SrcPort: 40001, DstPort: 2222, Seq: 0xfffffff0, Flags: pkttest.FlagSYN | pkttest.FlagECE | pkttest.FlagCWR, Window: 64800}
	if opts {
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xa0}}}
	}
	return ip.TCP(tcp, payload)
}

func TestBuild(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tclass  uint8
		payload []byte
		opts    bool
		wantAck uint32
		wantTC  uint8
	}{
		{"bare SYN", 0, nil, false, 0xfffffff1, 0},
		{"options, DSCP with ECN bits", 0xb9, nil, true, 0xfffffff1, 0xb8},
		{"SYN with data (token)", 0, make([]byte, 80), false, (0xfffffff1 + 80) & 0xffffffff, 0},
		{"seq wraps", 0, make([]byte, 20), true, (0xfffffff1 + 20) & 0xffffffff, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			syn := synV6(tt.tclass, tt.payload, tt.opts)
			out, err := Build(nil, syn, 0xabcde, 64)
			if err != nil {
				t.Fatal(err)
			}
			pkt := gopacket.NewPacket(out, layers.LayerTypeIPv6, gopacket.Default)
			ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || tcp == nil {
				t.Fatalf("reset does not decode: %v", pkt.ErrorLayer())
			}
			if ip.HopLimit != 64 || ip.FlowLabel != 0xabcde || ip.TrafficClass != tt.wantTC || ip.Length != 20 {
				t.Errorf("ip = hop %d label %#x tc %#x len %d", ip.HopLimit, ip.FlowLabel, ip.TrafficClass, ip.Length)
			}
			if !ip.SrcIP.Equal(net.ParseIP("fd00:77::1")) || !ip.DstIP.Equal(net.ParseIP("fd00:77::2")) {
				t.Errorf("addresses %v -> %v", ip.SrcIP, ip.DstIP)
			}
			if tcp.SrcPort != 2222 || tcp.DstPort != 40001 || !tcp.RST || !tcp.ACK || tcp.SYN || tcp.ECE || tcp.CWR ||
				tcp.Seq != 0 || tcp.Ack != tt.wantAck || tcp.Window != 0 || tcp.DataOffset != 5 || len(tcp.Payload) != 0 {
				t.Errorf("tcp = %+v", tcp)
			}
			// The checksum must verify.
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			got := binary.BigEndian.Uint16(out[40+16:])
			binary.BigEndian.PutUint16(out[40+16:], 0)
			if want := inet.Checksum(inet.Sum(inet.Pseudo6([16]byte(out[8:24]), [16]byte(out[24:40]), protoTCP, 20), out[40:])); got != want {
				t.Errorf("checksum %#x, want %#x", got, want)
			}
		})
	}
}

// TestBuildExtensionHeaders: a SYN with IPv6 extension headers is answered
// like any other (the kernel answers it too); the reset carries none.
func TestBuildExtensionHeaders(t *testing.T) {
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolIPv6Destination, HopLimit: 64,
		SrcIP: net.ParseIP("fd00:77::2"), DstIP: net.ParseIP("fd00:77::1")}
	dst := &layers.IPv6Destination{}
	dst.NextHeader = layers.IPProtocolTCP
	dst.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
	tcp := &layers.TCP{SrcPort: 40001, DstPort: 2222, Seq: 100, SYN: true, Window: 64800}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, dst, tcp, gopacket.Payload([]byte("tok"))); err != nil {
		t.Fatal(err)
	}
	out, err := Build(nil, buf.Bytes(), 5, 64)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if out[6] != protoTCP || binary.BigEndian.Uint16(out[4:]) != 20 {
		t.Fatalf("reset carries extension headers: next %d len %d", out[6], binary.BigEndian.Uint16(out[4:]))
	}
	if got := binary.BigEndian.Uint32(out[40+8:]); got != 100+1+3 {
		t.Fatalf("ack = %d, want %d (seq + SYN + 3 bytes of payload)", got, 100+1+3)
	}
}

// withAH returns syn, an IPv6 packet, with a 24-byte authentication header
// (AH, as HMAC-SHA1-96 makes it) inserted after the fixed header.
func withAH(syn []byte) []byte {
	ah := make([]byte, 24)
	ah[0] = syn[6]              // AH's next header: what followed the fixed header
	ah[1] = byte(len(ah)/4 - 2) // AH counts 4-byte units beyond the first 8
	binary.BigEndian.PutUint32(ah[4:], 0x100)
	out := append(append(append([]byte(nil), syn[:40]...), ah...), syn[40:]...)
	out[6] = 51
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(syn[4:])+uint16(len(ah)))
	return out
}

// TestBuildAH: a SYN with an authentication header is answered like any
// other SYN (verdict walks past AH to judge it; an answer that fell back to
// ip6tables' REJECT would carry flow label 0), and the reset carries no
// extension header. The checksum is over the reset alone.
func TestBuildAH(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
	}{{"bare", nil}, {"with a token", make([]byte, 67)}} {
		t.Run(tt.name, func(t *testing.T) {
			plain := synV6(0, tt.payload, true)
			want, err := Build(nil, plain, 0xabcde, 64)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Build(nil, withAH(plain), 0xabcde, 64)
			if err != nil {
				t.Fatalf("Build with AH: %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("reset to the SYN with AH differs from the reset to the same SYN without:\n%x\n%x", got, want)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	syn := synV6(0, nil, false)
	ack := append([]byte(nil), syn...)
	ack[40+13] = 0x12 // SYN|ACK
	v4 := append([]byte(nil), syn...)
	v4[0] = 0x45
	udp := append([]byte(nil), syn...)
	udp[6] = 17
	mcast := append([]byte(nil), syn...)
	mcast[24] = 0xff
	frag := append(append(append([]byte(nil), syn[:40]...), 6, 0, 0, 0, 0, 0, 0, 1), syn[40:]...)
	frag[6] = 44
	binary.BigEndian.PutUint16(frag[4:], binary.BigEndian.Uint16(syn[4:])+8)
	for name, pkt := range map[string][]byte{"short": syn[:50], "syn-ack": ack, "v4": v4, "udp": udp, "empty": nil, "multicast": mcast,
		"fragment": frag, "ah cut short": withAH(syn)[:70]} {
		if _, err := Build(nil, pkt, 1, 64); !errors.Is(err, ErrNotSYN) {
			t.Errorf("%s: err = %v, want ErrNotSYN", name, err)
		}
	}
}

func TestBuildNoAllocs(t *testing.T) {
	syn := synV6(0, nil, false)
	var buf [resetLen]byte
	if n := testing.AllocsPerRun(100, func() { _, _ = Build(buf[:0], syn, 7, 64) }); n != 0 {
		t.Fatalf("Build allocates %v", n)
	}
}

func FuzzBuild(f *testing.F) {
	f.Add(make([]byte, 60))
	f.Add(withAH(synV6(0, []byte("tok"), false)))
	f.Add(syn4Packet([]byte("tok")))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Build(nil, b, 1, 64)
		if err == nil && len(out) != resetLen {
			t.Fatalf("len %d", len(out))
		}
		out, err = Build4(nil, b, 63)
		if err == nil && len(out) != reset4Len {
			t.Fatalf("Build4: len %d", len(out))
		}
	})
}
