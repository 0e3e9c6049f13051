package verdict

import (
	"encoding/binary"
	"net/netip"

	"github.com/knockwall/knockwall/internal/inet"
)

// IP protocol numbers.
const (
	protoTCP = inet.ProtoTCP
	protoUDP = inet.ProtoUDP
)

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Parsed is a decoded packet header. Decode fills it in place from a caller
// owned value, keeping offsets into the buffer, and never allocates.
type Parsed struct {
	Src, Dst         netip.Addr
	IPVersion        uint8 // 4 or 6; 0 when the IP header is unusable
	IPProto          uint8 // TCP or UDP; 0 when the transport header is unusable
	SrcPort, DstPort uint16
	TCPFlags         uint8
	PayloadOff       int // offset of the transport payload in the buffer
	PayloadLen       int
}

// Valid reports whether Decode found a whole TCP or UDP header.
func (p *Parsed) Valid() bool { return p.IPProto == protoTCP || p.IPProto == protoUDP }

// Decode parses an IPv4 or IPv6 packet with a TCP or UDP header. A short,
// odd or fragmented packet, or an IPv6 packet from an IPv4-mapped source,
// leaves IPProto 0; it never panics.
func (p *Parsed) Decode(b []byte) {
	*p = Parsed{}
	if len(b) < 1 {
		return
	}
	switch b[0] >> 4 {
	case 4:
		p.decode4(b)
	case 6:
		p.decode6(b)
	}
}

func (p *Parsed) decode4(b []byte) {
	if len(b) < 20 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	// The copy the kernel hands us may be cut short by the copy range, so
	// the buffer may hold less than total; a total shorter than the header
	// is a lie.
	if ihl < 20 || len(b) < ihl || total < ihl {
		return
	}
	p.IPVersion = 4
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	// Fragments: only a first fragment carries the transport header, and a
	// first fragment with more to come might carry a header that later
	// fragments overwrite. The kernel reassembles before INPUT, so any
	// fragment seen here is odd; leave it unknown.
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
		return
	}
	p.decodeTransport(b[:min(total, len(b))], b[9], ihl)
}

func (p *Parsed) decode6(b []byte) {
	if len(b) < inet.IPv6HeaderLen {
		return
	}
	p.IPVersion = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	if p.Src.Is4In6() {
		// ::ffff:a.b.c.d is no IPv6 source (RFC 4291, 2.5.5.2), yet the
		// kernel may hand one over (UDP to the SPA port arrives). Left
		// unknown, it never reaches the tracker or the SPA code, where it
		// would meet a.b.c.d's state under the same 16-byte key, or spend
		// the nonce of a token bound to a.b.c.d.
		return
	}
	// The walk leaves fragments unknown, as decode4 does, and is the one
	// internal/rst answers by, so every SYN knockwall rejects is answered
	// alike whatever its extension headers.
	if next, off, ok := inet.WalkIPv6(b); ok {
		p.decodeTransport(b[:inet.IPv6End(b)], next, off)
	}
}

func (p *Parsed) decodeTransport(b []byte, proto uint8, off int) {
	switch proto {
	case protoTCP:
		if off+20 > len(b) {
			return
		}
		doff := int(b[off+12]>>4) * 4
		if doff < 20 {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(b[off:])
		p.DstPort = binary.BigEndian.Uint16(b[off+2:])
		p.TCPFlags = b[off+13]
		p.PayloadOff = off + doff
		if p.PayloadOff > len(b) {
			// Options cut off by the copy range; the ports and flags we
			// need are whole.
			p.PayloadOff = len(b)
		}
	case protoUDP:
		if off+8 > len(b) {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(b[off:])
		p.DstPort = binary.BigEndian.Uint16(b[off+2:])
		p.PayloadOff = off + 8
	default:
		return
	}
	p.IPProto = proto
	p.PayloadLen = len(b) - p.PayloadOff
}
