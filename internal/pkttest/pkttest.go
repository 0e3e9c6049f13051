// Package pkttest builds IPv4 and IPv6 packets for tests and benchmarks:
// whole packets as the kernel hands them to NFQUEUE, and TCP or UDP
// segments as a raw socket sends them. Lengths and checksums are always
// right; every other field is what the caller asks for, with the defaults
// SYN and Datagram use written down here once.
//
// Only test code imports it. A description gopacket cannot serialize (an
// option too long, an extension header of an unknown kind) is a mistake in
// the test and panics, so that builders can be used anywhere a test needs
// bytes: in tables, fuzz seeds, benchmarks and goroutines.
package pkttest

import (
	"fmt"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TCP flags, as the header's flags byte holds them.
const (
	FlagFIN uint8 = 0x01
	FlagSYN uint8 = 0x02
	FlagRST uint8 = 0x04
	FlagPSH uint8 = 0x08
	FlagACK uint8 = 0x10
	FlagURG uint8 = 0x20
	FlagECE uint8 = 0x40
	FlagCWR uint8 = 0x80
)

// Defaults of SYN and Datagram, and of IP.TTL.
const (
	DefaultTTL     = 64
	DefaultSrcPort = 40000
	DefaultSeq     = 1000
	DefaultWindow  = 64240
)

// IP is the network header of a packet. The family is Src's; Dst must be of
// the same family.
type IP struct {
	Src, Dst netip.Addr
	TTL      uint8 // IPv4 TTL or IPv6 hop limit; 0 is DefaultTTL
	TOS      uint8 // IPv4 TOS or IPv6 traffic class

	// IPv4 only.
	ID         uint16
	Flags      layers.IPv4Flag // DF, MF
	FragOffset uint16          // in 8-byte units
	Options    []layers.IPv4Option

	// IPv6 only.
	FlowLabel uint32
	// Ext are extension headers between the IPv6 header and the transport
	// header, in order; their next-header fields are set here.
	Ext []gopacket.SerializableLayer
}

// TCP is a TCP header.
type TCP struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8 // FlagFIN, FlagSYN, ...
	Window           uint16
	Options          []layers.TCPOption
}

// UDP is a UDP header.
type UDP struct {
	SrcPort, DstPort uint16
}

// SYN is a bare TCP SYN from src (port DefaultSrcPort) to dst: sequence
// number DefaultSeq, window DefaultWindow, no options, TTL DefaultTTL, and
// for IPv4 DF set, as Linux sends one.
func SYN(src netip.Addr, dst netip.AddrPort) []byte {
	ip := IP{Src: src, Dst: dst.Addr()}
	if src.Is4() {
		ip.Flags = layers.IPv4DontFragment
	}
	return ip.TCP(TCP{SrcPort: DefaultSrcPort, DstPort: dst.Port(), Seq: DefaultSeq, Flags: FlagSYN, Window: DefaultWindow}, nil)
}

// Datagram is a UDP datagram from src (port DefaultSrcPort) to dst carrying
// payload, with SYN's IP header.
func Datagram(src netip.Addr, dst netip.AddrPort, payload []byte) []byte {
	ip := IP{Src: src, Dst: dst.Addr()}
	if src.Is4() {
		ip.Flags = layers.IPv4DontFragment
	}
	return ip.UDP(UDP{SrcPort: DefaultSrcPort, DstPort: dst.Port()}, payload)
}

// TCP is the whole packet: ip's header, t and payload.
func (ip IP) TCP(t TCP, payload []byte) []byte {
	return ip.build(layers.IPProtocolTCP, t.layer(), payload)
}

// UDP is the whole packet: ip's header, u and payload.
func (ip IP) UDP(u UDP, payload []byte) []byte {
	return ip.build(layers.IPProtocolUDP, u.layer(), payload)
}

// Raw is ip's header followed by payload as the protocol proto's bytes
// (ICMP, a truncated header, ...): nothing in payload is checksummed.
func (ip IP) Raw(proto layers.IPProtocol, payload []byte) []byte {
	return ip.build(proto, nil, payload)
}

// TCPSegment is t and payload alone, with the checksum for src -> dst: the
// IP payload of IP{Src: src, Dst: dst}.TCP(t, payload), which a raw
// IPPROTO_TCP socket sends as it is.
func TCPSegment(src, dst netip.Addr, t TCP, payload []byte) []byte {
	return segment(src, dst, t.layer(), payload)
}

// UDPSegment is UDP's TCPSegment.
func UDPSegment(src, dst netip.Addr, u UDP, payload []byte) []byte {
	return segment(src, dst, u.layer(), payload)
}

func (t TCP) layer() *layers.TCP {
	return &layers.TCP{
		SrcPort: layers.TCPPort(t.SrcPort), DstPort: layers.TCPPort(t.DstPort),
		Seq: t.Seq, Ack: t.Ack, Window: t.Window, Options: t.Options,
		FIN: t.Flags&FlagFIN != 0, SYN: t.Flags&FlagSYN != 0, RST: t.Flags&FlagRST != 0, PSH: t.Flags&FlagPSH != 0,
		ACK: t.Flags&FlagACK != 0, URG: t.Flags&FlagURG != 0, ECE: t.Flags&FlagECE != 0, CWR: t.Flags&FlagCWR != 0,
	}
}

func (u UDP) layer() *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(u.SrcPort), DstPort: layers.UDPPort(u.DstPort)}
}

// checksummed is a transport layer whose checksum covers a pseudo-header.
type checksummed interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}

// network is ip's header as a gopacket layer, with next as the protocol
// after the IP header and its extension headers.
func (ip IP) network(next layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if ip.Src.Is4() != ip.Dst.Is4() || !ip.Src.IsValid() {
		panic(fmt.Sprintf("pkttest: addresses %v -> %v of different or no family", ip.Src, ip.Dst))
	}
	ttl := ip.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ip.Src.Is4() {
		if len(ip.Ext) > 0 {
			panic("pkttest: extension headers in an IPv4 packet")
		}
		v4 := &layers.IPv4{
			Version: 4, IHL: 5, TOS: ip.TOS, TTL: ttl, Protocol: next, Id: ip.ID,
			Flags: ip.Flags, FragOffset: ip.FragOffset, Options: ip.Options,
			SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice(),
		}
		return v4, v4
	}
	v6 := &layers.IPv6{Version: 6, TrafficClass: ip.TOS, FlowLabel: ip.FlowLabel, HopLimit: ttl, NextHeader: next,
		SrcIP: ip.Src.AsSlice(), DstIP: ip.Dst.AsSlice()}
	if len(ip.Ext) > 0 {
		v6.NextHeader = extProto(ip.Ext[0])
		for i, e := range ip.Ext {
			n := next
			if i+1 < len(ip.Ext) {
				n = extProto(ip.Ext[i+1])
			}
			setNext(e, n)
		}
	}
	return v6, v6
}

func (ip IP) build(proto layers.IPProtocol, transport checksummed, payload []byte) []byte {
	l3, network := ip.network(proto)
	ls := append([]gopacket.SerializableLayer{l3}, ip.Ext...)
	if transport != nil {
		if err := transport.SetNetworkLayerForChecksum(network); err != nil {
			panic(fmt.Sprintf("pkttest: %v", err))
		}
		ls = append(ls, transport)
	}
	return serialize(append(ls, gopacket.Payload(payload))...)
}

func segment(src, dst netip.Addr, transport checksummed, payload []byte) []byte {
	proto := layers.IPProtocolTCP
	if _, ok := transport.(*layers.UDP); ok {
		proto = layers.IPProtocolUDP
	}
	_, network := IP{Src: src, Dst: dst}.network(proto)
	if err := transport.SetNetworkLayerForChecksum(network); err != nil {
		panic(fmt.Sprintf("pkttest: %v", err))
	}
	return serialize(transport, gopacket.Payload(payload))
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ls...); err != nil {
		panic(fmt.Sprintf("pkttest: serialize: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

// extProto is the protocol number of an IPv6 extension header layer.
func extProto(l gopacket.SerializableLayer) layers.IPProtocol {
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
	panic(fmt.Sprintf("pkttest: not an IPv6 extension header: %T", l))
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
