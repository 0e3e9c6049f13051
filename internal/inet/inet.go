// Package inet is the Internet-layer code that knockwall needs in more than
// one place, so that every place gets one behaviour: the walk over IPv6
// extension headers to the upper-layer header, and the Internet checksum
// (RFC 1071) with its IPv4 and IPv6 pseudo-headers. Nothing here allocates
// or panics, whatever the bytes.
package inet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers.
const (
	ProtoHopByHop = 0
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoNoNext   = 59
	ProtoDestOpts = 60
)

// IPv6HeaderLen is the length of the fixed IPv6 header.
const IPv6HeaderLen = 40

// MaxExtHeaders bounds the extension headers WalkIPv6 passes over: more
// than any sane packet carries.
const MaxExtHeaders = 8

// IPv6End is where the IPv6 packet b ends: its payload length says, unless
// the buffer (a copy cut short, say) ends first. It is 0 when b is shorter
// than the fixed header.
func IPv6End(b []byte) int {
	if len(b) < IPv6HeaderLen {
		return 0
	}
	return min(IPv6HeaderLen+int(binary.BigEndian.Uint16(b[4:6])), len(b))
}

// WalkIPv6 passes over the extension headers of the IPv6 packet b, as far as
// IPv6End, and returns the protocol number and offset of the upper-layer
// header: the first header that is none of hop-by-hop options, routing,
// destination options and authentication (AH). It returns ok false, and
// proto and off zero, when b is shorter than the fixed header, an extension
// header does not fit, the chain holds a fragment header (a fragment's
// upper-layer header cannot be trusted, and the kernel reassembles before
// knockwall sees a packet anyway) or ends in "no next header", or there are
// more than MaxExtHeaders extension headers. When ok, off <= IPv6End(b); the
// upper-layer header itself may still be cut short.
//
// The lengths are the kernel's (ipv6_skip_exthdr): options and routing
// headers count 8-byte units beyond the first 8 bytes, AH counts 4-byte
// units beyond the first 8.
func WalkIPv6(b []byte) (proto uint8, off int, ok bool) {
	end := IPv6End(b)
	if end == 0 {
		return 0, 0, false
	}
	next, off := b[6], IPv6HeaderLen
	for range MaxExtHeaders + 1 {
		var size int
		switch next {
		case ProtoHopByHop, ProtoRouting, ProtoDestOpts:
			if off+8 > end {
				return 0, 0, false
			}
			size = (int(b[off+1]) + 1) * 8
		case ProtoAH:
			if off+8 > end {
				return 0, 0, false
			}
			size = (int(b[off+1]) + 2) * 4
		case ProtoFragment, ProtoNoNext:
			return 0, 0, false
		default:
			return next, off, true
		}
		if off+size > end {
			return 0, 0, false
		}
		next, off = b[off], off+size
	}
	return 0, 0, false
}

// Sum adds b to the running one's-complement sum sum, as big-endian 16-bit
// words (RFC 1071); an odd last byte counts as a word with a zero low byte,
// so only the last piece of a checksummed whole may have an odd length.
// Fold the result with Checksum.
func Sum(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint16(b[0:])) + uint64(binary.BigEndian.Uint16(b[2:])) +
			uint64(binary.BigEndian.Uint16(b[4:])) + uint64(binary.BigEndian.Uint16(b[6:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

// Checksum folds sum to 16 bits and complements it: the value for a
// header's checksum field, computed with that field zero. Over data that
// already holds its right checksum it is 0.
func Checksum(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// UDPChecksum is c as a UDP checksum field carries it: a computed 0 goes out
// as 0xffff, because 0 means "no checksum" (RFC 768; required over IPv6).
func UDPChecksum(c uint16) uint16 {
	if c == 0 {
		return 0xffff
	}
	return c
}

// Pseudo4 is the sum of the IPv4 pseudo-header (RFC 793) for an upper-layer
// segment of length bytes.
func Pseudo4(src, dst [4]byte, proto uint8, length int) uint64 {
	sum := Sum(0, src[:])
	sum = Sum(sum, dst[:])
	return sum + uint64(proto) + uint64(uint16(length))
}

// Pseudo6 is the sum of the IPv6 pseudo-header (RFC 8200, 8.1) for an
// upper-layer packet of length bytes.
func Pseudo6(src, dst [16]byte, proto uint8, length int) uint64 {
	sum := Sum(0, src[:])
	sum = Sum(sum, dst[:])
	return sum + uint64(proto) + uint64(uint32(length)>>16) + uint64(uint32(length)&0xffff)
}

// Pseudo is Pseudo4 when src is IPv4 and Pseudo6 otherwise; dst must be of
// the same family.
func Pseudo(src, dst netip.Addr, proto uint8, length int) uint64 {
	if src.Is4() {
		return Pseudo4(src.As4(), dst.As4(), proto, length)
	}
	return Pseudo6(src.As16(), dst.As16(), proto, length)
}
