package verdict_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/knockwall/knockwall/internal/pkttest"
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

// spec describes a packet for internal/pkttest to build: IPv4 id 0x1234,
// TTL or hop limit 64, TCP sequence number 1000 and window 64240.
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

func (s spec) ip() pkttest.IP {
	return pkttest.IP{Src: s.src, Dst: s.dst, ID: 0x1234, Flags: s.ipFlags, FragOffset: s.fragOff, Options: s.ipOpts, Ext: s.ext}
}

func (s spec) tcp(tb testing.TB) []byte {
	tb.Helper()
	return s.ip().TCP(pkttest.TCP{SrcPort: s.sport, DstPort: s.dport, Seq: 1000, Window: 64240, Flags: s.flags, Options: s.tcpOpts}, s.payload)
}

func (s spec) udp(tb testing.TB) []byte {
	tb.Helper()
	return s.ip().UDP(pkttest.UDP{SrcPort: s.sport, DstPort: s.dport}, s.payload)
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
