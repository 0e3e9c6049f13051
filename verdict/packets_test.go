package verdict_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/verdict"
)

// TCP flags the verdict package does not name.
const (
	tcpPsh = 0x08
	tcpUrg = 0x20
	tcpEce = 0x40
	tcpCwr = 0x80
)

var (
	client4  = netip.MustParseAddr("192.0.2.10")
	client4b = netip.MustParseAddr("192.0.2.11")
	server4  = netip.MustParseAddr("198.51.100.1")
	client6  = netip.MustParseAddr("2001:db8::10")
	client6b = netip.MustParseAddr("2001:db8::11")
	server6  = netip.MustParseAddr("2001:db8:ffff::1")
	// mapped4 is client4's IPv4-mapped IPv6 form, ::ffff:192.0.2.10.
	mapped4 = netip.AddrFrom16(client4.As16())
)

// gopacketLayer is short for a serializable gopacket layer.
type gopacketLayer = gopacket.SerializableLayer

// spec describes a packet to serialize with gopacket.
type spec struct {
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8 // TCP flags
	tcpOpts      []layers.TCPOption
	ipOpts       []layers.IPv4Option
	ipFlags      layers.IPv4Flag
	fragOff      uint16
	payload      []byte
	ext          []gopacket.SerializableLayer // IPv6 extension headers, in order
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// extProto is the protocol number of an IPv6 extension header layer.
func extProto(tb testing.TB, l gopacket.SerializableLayer) layers.IPProtocol {
	switch l.(type) {
	case *layers.IPv6HopByHop:
		return layers.IPProtocolIPv6HopByHop
	case *layers.IPv6Destination:
		return layers.IPProtocolIPv6Destination
	case *layers.IPv6Fragment:
		return layers.IPProtocolIPv6Fragment
	case *layers.IPv6Routing:
		return layers.IPProtocolIPv6Routing
	}
	tb.Fatalf("not an extension header: %T", l)
	return 0
}

func setNext(l gopacket.SerializableLayer, next layers.IPProtocol) {
	switch h := l.(type) {
	case *layers.IPv6HopByHop:
		h.NextHeader = next
	case *layers.IPv6Destination:
		h.NextHeader = next
	case *layers.IPv6Fragment:
		h.NextHeader = next
	case *layers.IPv6Routing:
		h.NextHeader = next
	}
}

// build serializes the IP header (with s.ext for IPv6), then transport.
func (s spec) build(tb testing.TB, proto layers.IPProtocol, transport gopacket.SerializableLayer) []byte {
	tb.Helper()
	var ip gopacket.SerializableLayer
	var network gopacket.NetworkLayer
	if s.src.Is4() {
		v4 := &layers.IPv4{
			Version: 4, IHL: 5, TTL: 64, Protocol: proto, Id: 0x1234,
			Flags: s.ipFlags, FragOffset: s.fragOff, Options: s.ipOpts,
			SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice(),
		}
		ip, network = v4, v4
	} else {
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice()}
		if len(s.ext) > 0 {
			v6.NextHeader = extProto(tb, s.ext[0])
			for i, e := range s.ext {
				next := proto
				if i+1 < len(s.ext) {
					next = extProto(tb, s.ext[i+1])
				}
				setNext(e, next)
			}
		}
		ip, network = v6, v6
	}
	ls := []gopacket.SerializableLayer{ip}
	ls = append(ls, s.ext...)
	if transport != nil {
		switch tr := transport.(type) {
		case *layers.TCP:
			if err := tr.SetNetworkLayerForChecksum(network); err != nil {
				tb.Fatal(err)
			}
		case *layers.UDP:
			if err := tr.SetNetworkLayerForChecksum(network); err != nil {
				tb.Fatal(err)
			}
		}
		ls = append(ls, transport)
	}
	ls = append(ls, gopacket.Payload(s.payload))
	return serialize(tb, ls...)
}

func (s spec) tcp(tb testing.TB) []byte {
	tb.Helper()
	return s.build(tb, layers.IPProtocolTCP, &layers.TCP{
		SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 1000, Window: 64240,
		FIN: s.flags&verdict.TCPFin != 0, SYN: s.flags&verdict.TCPSyn != 0, RST: s.flags&verdict.TCPRst != 0,
		PSH: s.flags&tcpPsh != 0, ACK: s.flags&verdict.TCPAck != 0, URG: s.flags&tcpUrg != 0,
		ECE: s.flags&tcpEce != 0, CWR: s.flags&tcpCwr != 0,
		Options: s.tcpOpts,
	})
}

func (s spec) udp(tb testing.TB) []byte {
	tb.Helper()
	return s.build(tb, layers.IPProtocolUDP, &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)})
}

// server returns the destination that matches src's family.
func server(src netip.Addr) netip.Addr {
	if src.Is4() {
		return server4
	}
	return server6
}

// syn is a plain SYN from src to dport.
func syn(tb testing.TB, src netip.Addr, dport uint16) []byte {
	return spec{src: src, dst: server(src), sport: 40000, dport: dport, flags: verdict.TCPSyn}.tcp(tb)
}

// tcpPkt is a TCP segment with flags from src to dport.
func tcpPkt(tb testing.TB, src netip.Addr, dport uint16, flags uint8) []byte {
	return spec{src: src, dst: server(src), sport: 40000, dport: dport, flags: flags}.tcp(tb)
}

// udpPkt is a datagram from src to dport.
func udpPkt(tb testing.TB, src netip.Addr, dport uint16, payload []byte) []byte {
	return spec{src: src, dst: server(src), sport: 40001, dport: dport, payload: payload}.udp(tb)
}

// synOptions is a Linux-like SYN: MSS, SACK permitted, timestamps, NOP,
// window scale (20 bytes of options).
var synOptions = []layers.TCPOption{
	{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
	{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
	{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0, 1, 0, 0, 0, 0}},
	{OptionType: layers.TCPOptionKindNop},
	{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
}

// destOpts is an 8-byte destination options header (one PadN option).
func destOpts() *layers.IPv6Destination {
	return &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{
		{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}},
	}}
}

// hopByHop is an 8-byte hop-by-hop header: router alert and PadN.
func hopByHop() *layers.IPv6HopByHop {
	return &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{
		{OptionType: 5, OptionLength: 2, OptionData: []byte{0, 0}},
		{OptionType: 1, OptionLength: 0},
	}}
}

// icmp4 is an ICMP echo request.
func icmp4(tb testing.TB) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: client4.AsSlice(), DstIP: server4.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	return serialize(tb, ip, icmp, gopacket.Payload("ping-ping-ping-ping"))
}

// icmp6 is an ICMPv6 echo request.
func icmp6(tb testing.TB) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: client6.AsSlice(), DstIP: server6.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return serialize(tb, ip, icmp, gopacket.Payload("ping-ping"))
}

// withAH returns a copy of the IPv6 packet b with a 24-byte authentication
// header (AH, as HMAC-SHA1-96 makes it) inserted after the fixed header.
// gopacket decodes AH but does not build it.
func withAH(b []byte) []byte {
	ah := make([]byte, 24)
	ah[0] = b[6]                // AH's next header: what followed the fixed header
	ah[1] = byte(len(ah)/4 - 2) // AH counts 4-byte units beyond the first 8
	binary.BigEndian.PutUint32(ah[4:], 0x100)
	out := append(append(append([]byte(nil), b[:40]...), ah...), b[40:]...)
	out[6] = byte(layers.IPProtocolAH)
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:])+uint16(len(ah)))
	return out
}

// edit returns a copy of b changed by f.
func edit(b []byte, f func(b []byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	return c
}
