//go:build unix

package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// synSupported: raw TCP sockets exist here (root or CAP_NET_RAW needed).
const synSupported = true

// sendSYN sends one TCP SYN carrying payload from src to dst through a raw
// socket (needs root, or CAP_NET_RAW on Linux). The kernel adds the IP
// header; the TCP header and its checksum are built here. Whatever answers
// (an RST, or nothing) is left to the kernel, which knows no such
// connection.
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
	fd, err := unix.Socket(family, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("raw socket (needs root or CAP_NET_RAW): %w", err)
	}
	defer unix.Close(fd)
	unix.CloseOnExec(fd)
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
