package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

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
