package pkttest

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/internal/inet"
)

var (
	src4 = netip.MustParseAddr("192.0.2.7")
	dst4 = netip.MustParseAddr("198.51.100.9")
	src6 = netip.MustParseAddr("2001:db8::7")
	dst6 = netip.MustParseAddr("2001:db8:ffff::9")
)

// transport returns the packet's upper-layer protocol and bytes, found by
// knockwall's own header walk (IHL for IPv4, inet.WalkIPv6 for IPv6).
func transport(t *testing.T, b []byte) (uint8, []byte) {
	t.Helper()
	if b[0]>>4 == 4 {
		return b[9], b[int(b[0]&0x0f)*4:]
	}
	proto, off, ok := inet.WalkIPv6(b)
	if !ok {
		t.Fatalf("inet.WalkIPv6 cannot walk % x", b)
	}
	return proto, b[off:inet.IPv6End(b)]
}

// checkSums checks the packet's checksums with internal/inet, not with
// gopacket, which computed them: over data holding its right checksum the
// Internet checksum is 0.
func checkSums(t *testing.T, b []byte, src, dst netip.Addr) {
	t.Helper()
	if src.Is4() {
		if c := inet.Checksum(inet.Sum(0, b[:int(b[0]&0x0f)*4])); c != 0 {
			t.Errorf("IPv4 header checksum does not verify (%#04x)", c)
		}
	}
	proto, l4 := transport(t, b)
	if proto != inet.ProtoTCP && proto != inet.ProtoUDP {
		return
	}
	if c := inet.Checksum(inet.Sum(inet.Pseudo(src, dst, proto, len(l4)), l4)); c != 0 {
		t.Errorf("protocol %d checksum does not verify (%#04x)", proto, c)
	}
}

func decode(t *testing.T, b []byte) gopacket.Packet {
	t.Helper()
	first := layers.LayerTypeIPv4
	if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if err := p.ErrorLayer(); err != nil {
		t.Fatalf("gopacket cannot decode: %v", err.Error())
	}
	return p
}

func TestSYN(t *testing.T) {
	for _, tt := range []struct{ src, dst netip.Addr }{{src4, dst4}, {src6, dst6}} {
		t.Run(tt.src.String(), func(t *testing.T) {
			b := SYN(tt.src, netip.AddrPortFrom(tt.dst, 22))
			checkSums(t, b, tt.src, tt.dst)
			p := decode(t, b)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil {
				t.Fatalf("no TCP: %v", p)
			}
			if tcp.SrcPort != DefaultSrcPort || tcp.DstPort != 22 || !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN ||
				tcp.Seq != DefaultSeq || tcp.Window != DefaultWindow || len(tcp.Options) != 0 || len(tcp.Payload) != 0 {
				t.Errorf("TCP header %+v", tcp)
			}
			switch ip := p.NetworkLayer().(type) {
			case *layers.IPv4:
				if ip.TTL != DefaultTTL || ip.Flags != layers.IPv4DontFragment || ip.Length != 40 ||
					ip.SrcIP.String() != tt.src.String() || ip.DstIP.String() != tt.dst.String() {
					t.Errorf("IPv4 header %+v", ip)
				}
			case *layers.IPv6:
				if ip.HopLimit != DefaultTTL || ip.Length != 20 || ip.NextHeader != layers.IPProtocolTCP ||
					ip.SrcIP.String() != tt.src.String() || ip.DstIP.String() != tt.dst.String() {
					t.Errorf("IPv6 header %+v", ip)
				}
			}
		})
	}
}

func TestDatagram(t *testing.T) {
	for _, tt := range []struct {
		src, dst netip.Addr
		payload  []byte
	}{
		{src4, dst4, []byte("odd")}, // an odd length: the checksum's last word is padded
		{src6, dst6, []byte("even")},
		{src4, dst4, nil},
	} {
		b := Datagram(tt.src, netip.AddrPortFrom(tt.dst, 62201), tt.payload)
		checkSums(t, b, tt.src, tt.dst)
		udp, _ := decode(t, b).Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp == nil || udp.SrcPort != DefaultSrcPort || udp.DstPort != 62201 ||
			int(udp.Length) != 8+len(tt.payload) || !bytes.Equal(udp.Payload, tt.payload) {
			t.Errorf("%v: UDP header %+v", tt.src, udp)
		}
	}
}

// TestFields: every field asked for is in the packet, options and
// extension headers included, and the checksums still verify.
func TestFields(t *testing.T) {
	mss := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xa0}}}
	tcp := TCP{SrcPort: 40001, DstPort: 2222, Seq: 0xfffffff0, Ack: 7, Flags: FlagSYN | FlagECE | FlagCWR, Window: 64800, Options: mss}

	t.Run("IPv4", func(t *testing.T) {
		ip := IP{Src: src4, Dst: dst4, TTL: 61, TOS: 0x12, ID: 777, Flags: layers.IPv4DontFragment,
			Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}
		b := ip.TCP(tcp, []byte("token"))
		checkSums(t, b, src4, dst4)
		p := decode(t, b)
		v4 := p.NetworkLayer().(*layers.IPv4)
		if v4.TTL != 61 || v4.TOS != 0x12 || v4.Id != 777 || v4.Flags != layers.IPv4DontFragment || v4.IHL != 6 {
			t.Errorf("IPv4 header %+v", v4)
		}
		checkTCP(t, p, tcp, "token")
	})
	t.Run("IPv6", func(t *testing.T) {
		hbh := &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{
			{OptionType: 5, OptionLength: 2, OptionData: []byte{0, 0}}, {OptionType: 1, OptionLength: 0}}}
		dest := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{
			{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}}
		ip := IP{Src: src6, Dst: dst6, TTL: 3, TOS: 0x21, FlowLabel: 0x12345, Ext: []gopacket.SerializableLayer{hbh, dest}}
		b := ip.TCP(tcp, []byte("token"))
		checkSums(t, b, src6, dst6)
		p := decode(t, b)
		v6 := p.NetworkLayer().(*layers.IPv6)
		if v6.HopLimit != 3 || v6.TrafficClass != 0x21 || v6.FlowLabel != 0x12345 || v6.NextHeader != layers.IPProtocolIPv6HopByHop {
			t.Errorf("IPv6 header %+v", v6)
		}
		if proto, off, ok := inet.WalkIPv6(b); !ok || proto != inet.ProtoTCP || off != 40+8+8 {
			t.Errorf("WalkIPv6 = %d, %d, %v; want TCP after two 8-byte extension headers", proto, off, ok)
		}
		checkTCP(t, p, tcp, "token")
	})
}

func checkTCP(t *testing.T, p gopacket.Packet, want TCP, payload string) {
	t.Helper()
	got, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if got == nil {
		t.Fatalf("no TCP: %v", p)
	}
	if uint16(got.SrcPort) != want.SrcPort || uint16(got.DstPort) != want.DstPort || got.Seq != want.Seq || got.Ack != want.Ack ||
		got.Window != want.Window || !got.SYN || !got.ECE || !got.CWR || got.ACK || got.FIN || got.RST || got.PSH || got.URG ||
		len(got.Options) != 1 || got.Options[0].OptionType != layers.TCPOptionKindMSS || string(got.Payload) != payload {
		t.Errorf("TCP header %+v", got)
	}
}

// TestSegment: a segment is the IP payload of the packet with the same
// addresses, byte for byte, checksum included.
func TestSegment(t *testing.T) {
	for _, tt := range []struct{ src, dst netip.Addr }{{src4, dst4}, {src6, dst6}} {
		tcp := TCP{SrcPort: 40000, DstPort: 22, Seq: 5, Flags: FlagSYN, Window: 64240}
		pkt := IP{Src: tt.src, Dst: tt.dst}.TCP(tcp, []byte("x"))
		if _, l4 := transport(t, pkt); !bytes.Equal(TCPSegment(tt.src, tt.dst, tcp, []byte("x")), l4) {
			t.Errorf("%v: TCPSegment differs from the packet's TCP segment", tt.src)
		}
		udp := UDP{SrcPort: 41000, DstPort: 62201}
		pkt = IP{Src: tt.src, Dst: tt.dst}.UDP(udp, []byte("tok"))
		if _, l4 := transport(t, pkt); !bytes.Equal(UDPSegment(tt.src, tt.dst, udp, []byte("tok")), l4) {
			t.Errorf("%v: UDPSegment differs from the packet's UDP datagram", tt.src)
		}
	}
}

func TestRaw(t *testing.T) {
	b := IP{Src: src4, Dst: dst4}.Raw(layers.IPProtocolICMPv4, []byte{8, 0, 0, 0})
	checkSums(t, b, src4, dst4)
	if proto, l4 := transport(t, b); proto != 1 || !bytes.Equal(l4, []byte{8, 0, 0, 0}) {
		t.Errorf("Raw: protocol %d, payload % x", proto, l4)
	}
}

// TestMistakesPanic: a description no packet can have is the test's
// mistake, said at once.
func TestMistakesPanic(t *testing.T) {
	for name, f := range map[string]func(){
		"mixed families": func() { SYN(src4, netip.AddrPortFrom(dst6, 22)) },
		"no address":     func() { IP{}.TCP(TCP{}, nil) },
		"IPv4 extension": func() {
			IP{Src: src4, Dst: dst4, Ext: []gopacket.SerializableLayer{&layers.IPv6Destination{}}}.Raw(6, nil)
		},
		"not an extension": func() { IP{Src: src6, Dst: dst6, Ext: []gopacket.SerializableLayer{&layers.UDP{}}}.Raw(6, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}
