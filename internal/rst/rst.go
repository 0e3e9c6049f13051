// Package rst answers the SYNs knockwall rejects with a TCP reset built the
// way Linux builds its own reset for a closed port, and knockwall drops the
// SYN itself.
//
// A REJECT rule's reset would do over IPv4 (it is byte for byte the
// kernel's), but it acts on a mark a later host rule could change; over
// IPv6 it is not the kernel's: with net.ipv6.auto_flowlabels on (the
// default), Linux puts a non-zero flow label, stable for the 4-tuple, on its
// own resets, while REJECT always writes 0, and one SYN would tell a
// protected port from a closed one. So knockwall sends resets itself, with a
// flow label from a keyed hash of the 4-tuple: non-zero and stable, like the
// kernel's, and as unpredictable to an outsider. For a routed host behind a
// router it sends that host's reset, one hop lower (OpenRouted).
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

// Sender sends resets through raw IPv4 and IPv6 sockets. It is not safe
// for concurrent use: give each queue worker its own.
type Sender struct {
	fd4, fd6 int
	buf      [resetLen]byte
	sa4      unix.SockaddrInet4 // kept here: a Sockaddr on the stack would escape, one allocation per reset
	sa6      unix.SockaddrInet6
	seed     maphash.Seed
	zero     bool  // send flow label 0: the host has auto_flowlabels off
	hop, ttl uint8 // IPv6 hop limit and IPv4 TTL the resets carry
}

// Open opens the raw sockets of a sender of this host's own resets (needs
// CAP_NET_RAW): the reset Linux sends for a SYN to a closed port.
// autoFlowLabels says whether the host labels its own resets
// (net.ipv6.auto_flowlabels != 0).
func Open(autoFlowLabels bool) (*Sender, error) {
	return open(autoFlowLabels, defaultHopLimit(), defaultTTL())
}

// OpenRouted opens a sender of a routed host's resets: for a host behind
// this router, the reset that host sends for a closed port as the client
// sees it, one hop lower than it left the host (a Linux host's default TTL
// and hop limit, taken to be this router's own, less the router's hop).
func OpenRouted(autoFlowLabels bool) (*Sender, error) {
	return open(autoFlowLabels, max(defaultHopLimit(), 2)-1, max(defaultTTL(), 2)-1)
}

func open(autoFlowLabels bool, hop, ttl uint8) (*Sender, error) {
	// IPPROTO_RAW implies IP_HDRINCL and IPV6_HDRINCL: the headers below
	// go out as they are.
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		unix.Close(fd4)
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &Sender{fd4: fd4, fd6: fd6, seed: maphash.MakeSeed(), zero: !autoFlowLabels, hop: hop, ttl: ttl}, nil
}

// Close closes the sockets.
func (s *Sender) Close() error {
	unix.Close(s.fd4)
	return unix.Close(s.fd6)
}

// Reset answers syn, an IPv4 or IPv6 TCP SYN as NFQUEUE delivered it. It
// does not allocate.
func (s *Sender) Reset(syn []byte) error {
	if len(syn) > 0 && syn[0]>>4 == 4 {
		pkt, err := Build4(s.buf[:0], syn, s.ttl)
		if err != nil {
			return err
		}
		s.sa4.Addr = [4]byte(pkt[16:20])
		return unix.Sendto(s.fd4, pkt, 0, &s.sa4)
	}
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
	s.sa6.Addr = [16]byte(pkt[24:40])
	return unix.Sendto(s.fd6, pkt, 0, &s.sa6)
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
	dataLen, ok := synData(tcp, int(binary.BigEndian.Uint16(syn[4:6]))-(off-ipv6Header))
	if !ok {
		return nil, ErrNotSYN
	}

	dst = slices.Grow(dst, resetLen)
	out := dst[len(dst) : len(dst)+resetLen]
	tclass := (binary.BigEndian.Uint32(syn[0:4]) >> 20) & 0xfc
	binary.BigEndian.PutUint32(out[0:], 6<<28|tclass<<20|label&0xfffff)
	binary.BigEndian.PutUint16(out[4:], tcpHeader)
	out[6] = protoTCP
	out[7] = hop
	copy(out[8:24], syn[24:40]) // source: the SYN's destination
	copy(out[24:40], syn[8:24]) // destination: the SYN's source
	fillRST(out[ipv6Header:], tcp, dataLen, inet.Pseudo6([16]byte(out[8:24]), [16]byte(out[24:40]), protoTCP, tcpHeader))
	return dst[:len(dst)+resetLen], nil
}

// synData checks that tcp is a SYN's header (SYN alone of SYN, RST, FIN
// and ACK; a data offset that fits the segment) in a segment plen bytes
// long, and returns the length of its payload. The copy NFQUEUE hands
// over may stop short of the payload: the header fields read here are
// whole, and plen says how long the segment was.
func synData(tcp []byte, plen int) (dataLen uint32, ok bool) {
	doff := int(tcp[12]>>4) * 4
	if tcp[13]&0x17 != 0x02 || doff < tcpHeader || plen < doff {
		return 0, false
	}
	return uint32(plen - doff), true
}

// fillRST writes into r the TCP header of the reset for the SYN whose
// header is tcp: ports swapped, seq 0, ack = the SYN's seq + 1 +
// dataLen, RST|ACK, window 0, no options, and the checksum over pseudo
// (the reply's pseudo-header sum).
func fillRST(r, tcp []byte, dataLen uint32, pseudo uint64) {
	copy(r[0:2], tcp[2:4]) // source port: the SYN's destination port
	copy(r[2:4], tcp[0:2])
	binary.BigEndian.PutUint32(r[4:], 0)
	binary.BigEndian.PutUint32(r[8:], binary.BigEndian.Uint32(tcp[4:8])+1+dataLen)
	r[12] = 5 << 4
	r[13] = 0x14 // RST|ACK
	binary.BigEndian.PutUint16(r[14:], 0)
	binary.BigEndian.PutUint16(r[16:], 0)
	binary.BigEndian.PutUint16(r[18:], 0)
	binary.BigEndian.PutUint16(r[16:], inet.Checksum(inet.Sum(pseudo, r[:tcpHeader])))
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
	return sysctlUint8("/proc/sys/net/ipv6/conf/default/hop_limit", hopLimit)
}

// defaultTTL reads net.ipv4.ip_default_ttl.
func defaultTTL() uint8 {
	return sysctlUint8("/proc/sys/net/ipv4/ip_default_ttl", ttl4)
}

// sysctlUint8 reads a TTL-like sysctl (1..255), or def when it cannot.
func sysctlUint8(path string, def uint8) uint8 {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	var v int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &v); err != nil || v < 1 || v > 255 {
		return def
	}
	return uint8(v)
}
