package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/inet"
	"github.com/knockwall/knockwall/spa"
)

// localAddrFor returns the source address the kernel would use to reach dst.
// A connected UDP socket sends nothing.
func localAddrFor(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find a route to %s: %w", dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// newToken makes a fresh token for service, bound to src when src is valid.
func newToken(k *spa.Key, service string, now time.Time, src netip.Addr) ([]byte, error) {
	var nonce [spa.NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	return spa.Build(k, service, now.Unix(), nonce, src)
}

// sendUDP sends payload in one datagram to dst.
func sendUDP(dst netip.AddrPort, payload []byte) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(payload)
	return err
}

// sendSYN sends one TCP SYN carrying payload from src to dst through a raw
// socket (needs root or CAP_NET_RAW). The kernel adds the IP header; the TCP
// header and its checksum are built here. Whatever answers (an RST, or
// nothing) is left to the kernel, which knows no such connection.
func sendSYN(src netip.Addr, dst netip.AddrPort, payload []byte) error {
	var sport [2]byte
	var seq [4]byte
	if _, err := rand.Read(sport[:]); err != nil {
		return err
	}
	if _, err := rand.Read(seq[:]); err != nil {
		return err
	}
	sp := 32768 + binary.BigEndian.Uint16(sport[:])%28000
	seg := synSegment(src, dst, sp, binary.BigEndian.Uint32(seq[:]), payload)

	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("raw socket (needs root or CAP_NET_RAW): %w", err)
	}
	defer unix.Close(fd)
	var sa, la unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Addr: dst.Addr().As4()}
		la = &unix.SockaddrInet4{Addr: src.As4()}
	} else {
		sa = &unix.SockaddrInet6{Addr: dst.Addr().As16()}
		la = &unix.SockaddrInet6{Addr: src.As16()}
	}
	if err := unix.Bind(fd, la); err != nil {
		return fmt.Errorf("bind raw socket to %s: %w", src, err)
	}
	return unix.Sendto(fd, seg, 0, sa)
}

// synSegment is a TCP SYN (no options) from src port sport to dst with
// sequence number seq, carrying payload, its checksum over the
// pseudo-header of src and dst filled in.
func synSegment(src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32, payload []byte) []byte {
	seg := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], seq)
	seg[12] = 5 << 4 // data offset: 20 bytes, no options
	seg[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(seg[14:], 64240)
	seg = append(seg, payload...)
	binary.BigEndian.PutUint16(seg[16:], inet.Checksum(inet.Sum(inet.Pseudo(src, dst.Addr(), inet.ProtoTCP, len(seg)), seg)))
	return seg
}
