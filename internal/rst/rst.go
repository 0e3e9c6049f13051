// Package rst answers IPv6 SYNs that knockwall rejects with a TCP reset built
// the way Linux builds its own reset for a closed port.
//
// IPv4 rejects go through a static REJECT --reject-with tcp-reset rule, whose
// reset is byte for byte the kernel's closed-port reset. Over IPv6 it is not:
// with net.ipv6.auto_flowlabels on (the default), Linux puts a non-zero flow
// label, stable for the 4-tuple, on its own resets, while ip6tables' REJECT
// always writes 0. One SYN would then tell a protected port from a closed one.
// So knockwall drops such a SYN and sends the reset itself, with a flow label
// from a keyed hash of the 4-tuple: non-zero and stable, like the kernel's,
// and as unpredictable to an outsider.
package rst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/inet"
)

const (
	ipv6Header = inet.IPv6HeaderLen
	tcpHeader  = 20
	resetLen   = ipv6Header + tcpHeader
	hopLimit   = 64 // the kernel's default, when the sysctl cannot be read
	protoTCP   = inet.ProtoTCP
)

// ErrNotSYN is returned for a packet that is not an IPv6 TCP SYN (after the
// extension headers inet.WalkIPv6 passes over), which this package does not
// answer.
var ErrNotSYN = errors.New("rst: not an IPv6 TCP SYN")

// Sender sends resets through a raw IPv6 socket. It is not safe for
// concurrent use: give each queue worker its own.
type Sender struct {
	fd   int
	buf  [resetLen]byte
	sa   unix.SockaddrInet6
	seed maphash.Seed
	zero bool  // send flow label 0: the host has auto_flowlabels off
	hop  uint8 // hop limit, as the kernel's own resets carry
}

// Open opens the raw socket (needs CAP_NET_RAW). autoFlowLabels says whether
// the host labels its own resets (net.ipv6.auto_flowlabels != 0).
func Open(autoFlowLabels bool) (*Sender, error) {
	// IPPROTO_RAW implies IPV6_HDRINCL: the header below goes out as is.
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &Sender{fd: fd, seed: maphash.MakeSeed(), zero: !autoFlowLabels, hop: defaultHopLimit()}, nil
}

// Close closes the socket.
func (s *Sender) Close() error { return unix.Close(s.fd) }

// Reset answers syn, an IPv6 TCP SYN as NFQUEUE delivered it. It does not
// allocate.
func (s *Sender) Reset(syn []byte) error {
	pkt, err := Build(s.buf[:0], syn, 0, s.hop)
	if err != nil {
		return err
	}
	if !s.zero {
		// The kernel labels by the flow; so do we, keyed so that the
		// label says nothing about knockwall: a hash of the reply's
		// addresses and ports (contiguous in it), uniform over 20 bits
		// like the kernel's; only 0 is avoided, as 0 means "no label".
		label := uint32(maphash.Bytes(s.seed, pkt[8:ipv6Header+4])) & 0xfffff
		if label == 0 {
			label = 1
		}
		binary.BigEndian.PutUint32(pkt[0:4], binary.BigEndian.Uint32(pkt[0:4])|label)
	}
	s.sa.Addr = [16]byte(pkt[24:40])
	return unix.Sendto(s.fd, pkt, 0, &s.sa)
}

// Build appends to dst the reset Linux sends for syn when no socket listens:
// addresses and ports swapped, RST|ACK, seq 0, ack = SYN's seq + 1 + its
// payload length, window 0, no options; hop limit hop, the SYN's traffic
// class without ECN bits, and flow label label.
func Build(dst, syn []byte, label uint32, hop uint8) ([]byte, error) {
	if len(syn) < ipv6Header+tcpHeader || syn[0]>>4 != 6 || syn[24] == 0xff {
		// Not IPv6, or to a multicast address, which is never answered.
		return nil, ErrNotSYN
	}
	// The walk is the one verdict decodes by, so whatever SYN the engine
	// rejects is answered here, extension headers or not (AH included).
	proto, off, ok := inet.WalkIPv6(syn)
	if !ok || proto != protoTCP || len(syn) < off+tcpHeader {
		return nil, ErrNotSYN
	}
	tcp := syn[off:]
	doff := int(tcp[12]>>4) * 4
	plen := int(binary.BigEndian.Uint16(syn[4:6])) - (off - ipv6Header) // the TCP segment's length
	// The copy NFQUEUE hands over may stop short of the payload; the
	// header fields read here are whole, and plen says how long it was.
	if tcp[13]&0x17 != 0x02 || doff < tcpHeader || plen < doff {
		return nil, ErrNotSYN
	}
	dataLen := uint32(plen - doff)

	dst = slices.Grow(dst, resetLen)
	out := dst[len(dst) : len(dst)+resetLen]
	tclass := (binary.BigEndian.Uint32(syn[0:4]) >> 20) & 0xfc
	binary.BigEndian.PutUint32(out[0:], 6<<28|tclass<<20|label&0xfffff)
	binary.BigEndian.PutUint16(out[4:], tcpHeader)
	out[6] = protoTCP
	out[7] = hop
	copy(out[8:24], syn[24:40]) // source: the SYN's destination
	copy(out[24:40], syn[8:24]) // destination: the SYN's source
	r := out[ipv6Header:]
	copy(r[0:2], tcp[2:4]) // source port: the SYN's destination port
	copy(r[2:4], tcp[0:2])
	binary.BigEndian.PutUint32(r[4:], 0)
	binary.BigEndian.PutUint32(r[8:], binary.BigEndian.Uint32(tcp[4:8])+1+dataLen)
	r[12] = 5 << 4
	r[13] = 0x14 // RST|ACK
	binary.BigEndian.PutUint16(r[14:], 0)
	binary.BigEndian.PutUint16(r[16:], 0)
	binary.BigEndian.PutUint16(r[18:], 0)
	binary.BigEndian.PutUint16(r[16:], inet.Checksum(inet.Sum(inet.Pseudo6([16]byte(out[8:24]), [16]byte(out[24:40]), protoTCP, len(r)), r)))
	return dst[:len(dst)+resetLen], nil
}

// AutoFlowLabels reads net.ipv6.auto_flowlabels of the calling thread's
// network namespace and reports whether the kernel labels its own resets
// (1: on unless opted out; 3: always). Unreadable means the default, on.
func AutoFlowLabels() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/auto_flowlabels")
	if err != nil {
		return true
	}
	v := strings.TrimSpace(string(b))
	return v == "1" || v == "3"
}

// defaultHopLimit reads net.ipv6.conf.default.hop_limit, which the kernel's
// own resets carry unless a route says otherwise.
func defaultHopLimit() uint8 {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/hop_limit")
	if err != nil {
		return hopLimit
	}
	var v int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &v); err != nil || v < 1 || v > 255 {
		return hopLimit
	}
	return uint8(v)
}
