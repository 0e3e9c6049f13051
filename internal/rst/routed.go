package rst

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/inet"
)

const (
	ipv4Header = 20
	reset4Len  = ipv4Header + tcpHeader
	ttl4       = 64 // the kernel's default, when the sysctl cannot be read
)

// Routed answers, for a routed host behind this router, a SYN to one of its
// protected ports with the reset that host sends for a closed port, as the
// client sees it: from the host's address, one hop lower than it left the
// host (a Linux host's default TTL and hop limit, taken to be this router's
// own, less the router's hop). It is not safe for concurrent use.
type Routed struct {
	fd4, fd6 int
	buf      [resetLen]byte
	seed     maphash.Seed
	zero     bool
	hop, ttl uint8
}

// OpenRouted opens raw IPv4 and IPv6 sockets (needs CAP_NET_RAW).
func OpenRouted(autoFlowLabels bool) (*Routed, error) {
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		unix.Close(fd4)
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &Routed{fd4: fd4, fd6: fd6, seed: maphash.MakeSeed(), zero: !autoFlowLabels,
		hop: max(defaultHopLimit(), 2) - 1, ttl: max(defaultTTL(), 2) - 1}, nil
}

// Close closes the sockets.
func (r *Routed) Close() error {
	unix.Close(r.fd4)
	return unix.Close(r.fd6)
}

// Reset answers syn, an IPv4 or IPv6 TCP SYN to a routed host. It does
// not allocate.
func (r *Routed) Reset(syn []byte) error {
	if len(syn) > 0 && syn[0]>>4 == 4 {
		pkt, err := Build4(r.buf[:0], syn, r.ttl)
		if err != nil {
			return err
		}
		sa := unix.SockaddrInet4{Addr: [4]byte(pkt[16:20])}
		return unix.Sendto(r.fd4, pkt, 0, &sa)
	}
	pkt, err := Build(r.buf[:0], syn, 0, r.hop)
	if err != nil {
		return err
	}
	if !r.zero {
		label := uint32(maphash.Bytes(r.seed, pkt[8:ipv6Header+4])) & 0xfffff
		if label == 0 {
			label = 1
		}
		binary.BigEndian.PutUint32(pkt[0:4], binary.BigEndian.Uint32(pkt[0:4])|label)
	}
	sa := unix.SockaddrInet6{Addr: [16]byte(pkt[24:40])}
	return unix.Sendto(r.fd6, pkt, 0, &sa)
}

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
	doff := int(tcp[12]>>4) * 4
	plen := total - ihl
	if tcp[13]&0x17 != 0x02 || doff < tcpHeader || plen < doff {
		return nil, ErrNotSYN4
	}
	dataLen := uint32(plen - doff)

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
	t := out[ipv4Header:]
	copy(t[0:2], tcp[2:4])
	copy(t[2:4], tcp[0:2])
	binary.BigEndian.PutUint32(t[4:], 0)
	binary.BigEndian.PutUint32(t[8:], binary.BigEndian.Uint32(tcp[4:8])+1+dataLen)
	t[12] = 5 << 4
	t[13] = 0x14 // RST|ACK
	binary.BigEndian.PutUint16(t[14:], 0)
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[18:], 0)
	binary.BigEndian.PutUint16(t[16:], inet.Checksum(inet.Sum(inet.Pseudo4([4]byte(out[12:16]), [4]byte(out[16:20]), protoTCP, tcpHeader), t)))
	return dst[:len(dst)+reset4Len], nil
}

// defaultTTL reads net.ipv4.ip_default_ttl.
func defaultTTL() uint8 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_default_ttl")
	if err != nil {
		return ttl4
	}
	var v int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &v); err != nil || v < 1 || v > 255 {
		return ttl4
	}
	return uint8(v)
}
