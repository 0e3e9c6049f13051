package rst

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/knockwall/knockwall/internal/inet"
)

const (
	ipv4Header = 20
	reset4Len  = ipv4Header + tcpHeader
	ttl4       = 64 // the kernel's default, when the sysctl cannot be read
)

// ErrNotSYN4 is returned by Build4 for a packet that is not an IPv4 TCP SYN
// it answers.
var ErrNotSYN4 = fmt.Errorf("rst: not an IPv4 TCP SYN")

// Build4 appends to dst the reset Linux sends for an IPv4 syn when no
// socket listens: addresses and ports swapped, RST|ACK, seq 0, ack = SYN's
// seq + 1 + its payload length, window 0, no options; DF, id 0, TTL ttl,
// the SYN's TOS without the ECN bits.
func Build4(dst, syn []byte, ttl uint8) ([]byte, error) {
	if len(syn) < ipv4Header+tcpHeader || syn[0]>>4 != 4 || syn[9] != protoTCP {
		return nil, ErrNotSYN4
	}
	ihl := int(syn[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(syn[2:4]))
	if ihl < ipv4Header || len(syn) < ihl+tcpHeader || total < ihl+tcpHeader ||
		binary.BigEndian.Uint16(syn[6:8])&0x3fff != 0 || syn[16] >= 224 {
		// A fragment, or to a multicast or broadcast-class address.
		return nil, ErrNotSYN4
	}
	tcp := syn[ihl:]
	dataLen, ok := synData(tcp, total-ihl)
	if !ok {
		return nil, ErrNotSYN4
	}

	dst = slices.Grow(dst, reset4Len)
	out := dst[len(dst) : len(dst)+reset4Len]
	out[0] = 0x45
	out[1] = syn[1] &^ 0x03 // TOS without ECN
	binary.BigEndian.PutUint16(out[2:], reset4Len)
	binary.BigEndian.PutUint16(out[4:], 0)      // id
	binary.BigEndian.PutUint16(out[6:], 0x4000) // DF
	out[8] = ttl
	out[9] = protoTCP
	binary.BigEndian.PutUint16(out[10:], 0)
	copy(out[12:16], syn[16:20]) // source: the SYN's destination
	copy(out[16:20], syn[12:16])
	binary.BigEndian.PutUint16(out[10:], inet.Checksum(inet.Sum(0, out[:ipv4Header])))
	fillRST(out[ipv4Header:], tcp, dataLen, inet.Pseudo4([4]byte(out[12:16]), [4]byte(out[16:20]), protoTCP, tcpHeader))
	return dst[:len(dst)+reset4Len], nil
}
