package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/netns"
	"github.com/knockwall/knockwall/internal/pkttest"
)

// rstFields is everything in a reply RST that could tell a rejected port
// from a closed one. Fields that follow from the SYN are kept relative to it.
type rstFields struct {
	// IP
	TTL       uint8  // IPv4 TTL or IPv6 hop limit
	ID        uint16 // IPv4 only
	DF        bool   // IPv4 only
	TOS       uint8  // IPv4 TOS or IPv6 traffic class
	FlowLabel uint32 // IPv6 only
	IPLen     uint16 // IPv4 total length or IPv6 payload length
	// TCP
	Flags      string
	Seq        uint32
	AckMinusSN uint32 // ack - SYN's seq; 1 for a proper reset
	Window     uint16
	DataOffset uint8 // 5: no options
	Options    int
	Urgent     uint16
	Payload    int
}

// TestRejectLooksClosed: the RST knockwall's reject produces for a SYN to
// the protected port (and to a knock port) matches, field by field, the
// RST the kernel sends for a SYN to a port where nothing listens.
//
// The IPv6 flow label is the one field whose value cannot match: the kernel
// derives it from the 4-tuple with a secret of its own (auto_flowlabels), so
// two closed ports already differ. What must match is what an observer can
// test: non-zero exactly when the kernel's is, and stable for a 4-tuple.
func TestRejectLooksClosed(t *testing.T) { eachBackend(t, testRejectLooksClosed) }

func testRejectLooksClosed(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, svc: service{closed: reject}})
	ports := []struct {
		name string
		port uint16
	}{
		{name: "kernel, unused port", port: unusedPort},
		{name: "knockwall reject, protected port", port: protectedPort},
		{name: "knockwall reject, knock port", port: 7000},
	}
	families := []struct {
		name     string
		src, dst netip.Addr
	}{
		{name: "ipv4", src: e.pair.Client4, dst: e.pair.Server4},
		{name: "ipv6", src: e.pair.Client6, dst: e.pair.Server6},
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			var ref rstFields
			for i, p := range ports {
				seq := randUint32(t)
				got, err := synRST(e.pair, fam.src, netip.AddrPortFrom(fam.dst, p.port), seq)
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				t.Logf("%s: %+v", p.name, got)
				// The same 4-tuple again: the label must not change.
				again, err := synRST(e.pair, fam.src, netip.AddrPortFrom(fam.dst, p.port), seq)
				if err != nil {
					t.Fatalf("%s, again: %v", p.name, err)
				}
				if again.FlowLabel != got.FlowLabel {
					t.Errorf("%s: flow label changed for the same 4-tuple: %d then %d", p.name, got.FlowLabel, again.FlowLabel)
				}
				got.FlowLabel = min(got.FlowLabel, 1) // compare only zero or not
				if i == 0 {
					ref = got
					// The reference itself must be a bare reset.
					want := rstFields{TTL: got.TTL, ID: got.ID, DF: got.DF, TOS: got.TOS, FlowLabel: got.FlowLabel, IPLen: got.IPLen,
						Flags: "RST|ACK", Seq: 0, AckMinusSN: 1, Window: 0, DataOffset: 5, Options: 0, Urgent: 0, Payload: 0}
					if got != want {
						t.Errorf("kernel RST is not a bare RST|ACK: got %+v, want %+v", got, want)
					}
					continue
				}
				if got != ref {
					t.Errorf("%s differs from a closed port:\n  closed: %+v\n  %s: %+v\n  differences: %v", p.name, ref, p.name, got, diffFields(ref, got))
				}
			}
		})
	}
}

// TestRejectLooksClosedAH: an IPv6 SYN carrying an authentication header
// (AH) gets the same answer from the protected port and a knock port as from
// a closed port.
//
// Which answer that is depends on the host. The kernel handles AH before
// TCP: without AH support it answers the unknown next header with an ICMPv6
// parameter problem, with AH but no security association it drops the
// packet, and only an AH it accepts reaches TCP, which resets. With
// iptables-nft (Debian's default) "-p tcp" stops at AH (nftables' l4proto),
// so knockwall's rules never see such a SYN and every port answers alike.
// With legacy ip6tables, which walks past AH, knockwall judges the SYN and
// answers with its own reset (internal/rst, by the same walk as verdict): a
// reset with a kernel-like flow label, but still a reset where a closed port
// on a host without an AH security association sends none.
func TestRejectLooksClosedAH(t *testing.T) { eachBackend(t, testRejectLooksClosedAH) }

func testRejectLooksClosedAH(t *testing.T, b backend) {
	e := newEnv(t, envOptions{backend: b, svc: service{closed: reject}})
	var ref ahAnswer
	for i, port := range []uint16{unusedPort, protectedPort, 7000} {
		seq := randUint32(t)
		dst := netip.AddrPortFrom(e.pair.Server6, port)
		got, err := ahSYNAnswer(e.pair, e.pair.Client6, dst, seq)
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		t.Logf("port %d: %+v", port, got)
		again, err := ahSYNAnswer(e.pair, e.pair.Client6, dst, seq)
		if err != nil {
			t.Fatalf("port %d, again: %v", port, err)
		}
		if again.FlowLabel != got.FlowLabel {
			t.Errorf("port %d: flow label changed for the same SYN: %d then %d", port, got.FlowLabel, again.FlowLabel)
		}
		got.FlowLabel = min(got.FlowLabel, 1) // compare only zero or not, as in TestRejectLooksClosed
		if i == 0 {
			ref = got
			continue
		}
		if got != ref {
			t.Errorf("port %d answers a SYN with AH unlike a closed port:\n  closed: %+v\n  port %d: %+v", port, ref, port, got)
		}
	}
	if e.d.has("panic", nil) {
		t.Error("the daemon logged a panic")
	}
}

// ahAnswer is what comes back for an IPv6 SYN with AH: a reset (then RST
// holds its fields) or an ICMPv6 error about it, and the IPv6 fields of the
// reply. Silence is Kind "none".
type ahAnswer struct {
	Kind      string // "rst", "icmpv6" or "none"
	HopLimit  uint8
	TOS       uint8
	FlowLabel uint32
	IPLen     uint16
	RST       rstFields
	ICMPType  uint8
	ICMPCode  uint8
	Pointer   uint32 // of a parameter problem: where in our packet
	Quoted    int    // bytes of our packet quoted back
}

// ahLen is the authentication header ahSYNAnswer sends: 12 fixed bytes and
// a 12-byte ICV, as HMAC-SHA1-96 makes it.
const ahLen = 24

// ahSYNAnswer sends from src to dst, through a raw IPPROTO_AH socket in the
// client namespace (the kernel adds the IPv6 header, next header AH), an AH
// with a made-up SPI followed by a bare SYN with sequence number seq, and
// returns what comes back within captureTimeout.
func ahSYNAnswer(p *netns.Pair, src netip.Addr, dst netip.AddrPort, seq uint32) (ahAnswer, error) {
	sport := 40000 + uint16(seq%20000)
	seg := pkttest.TCPSegment(src, dst.Addr(), pkttest.TCP{SrcPort: sport, DstPort: dst.Port(), Seq: seq, Flags: pkttest.FlagSYN, Window: 64240}, nil)
	ah := make([]byte, ahLen, ahLen+len(seg))
	ah[0] = unix.IPPROTO_TCP
	ah[1] = ahLen/4 - 2                            // AH counts 4-byte units beyond the first 8
	binary.BigEndian.PutUint32(ah[4:], 0x4b570001) // SPI: no security association has it
	binary.BigEndian.PutUint32(ah[8:], 1)          // sequence number
	pkt, err := exchange(p, func() error { return sendRaw(src, dst.Addr(), unix.IPPROTO_AH, append(ah, seg...)) },
		func(pkt gopacket.Packet) bool {
			if !replyFrom(pkt, dst.Addr()) {
				return false
			}
			if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
				return uint16(tcp.SrcPort) == dst.Port() && uint16(tcp.DstPort) == sport
			}
			icmp, ok := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if !ok || icmp.TypeCode.Type() >= 128 { // informational (NDP, echo): not about our SYN
				return false
			}
			// The error quotes our packet after 4 bytes of its own: IPv6
			// header, AH, then the SYN's ports.
			q := icmp.Payload
			off := 4 + 40 + ahLen
			return len(q) >= off+4 && binary.BigEndian.Uint16(q[off:]) == sport && binary.BigEndian.Uint16(q[off+2:]) == dst.Port()
		})
	if err != nil {
		if strings.Contains(err.Error(), "nothing captured") {
			return ahAnswer{Kind: "none"}, nil
		}
		return ahAnswer{}, fmt.Errorf("answer from %v to port %d: %w", dst, sport, err)
	}
	ip := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	a := ahAnswer{HopLimit: ip.HopLimit, TOS: ip.TrafficClass, FlowLabel: ip.FlowLabel, IPLen: ip.Length}
	if pkt.Layer(layers.LayerTypeTCP) != nil {
		a.Kind, a.RST = "rst", rstFieldsOf(pkt, seq)
		a.RST.TTL, a.RST.TOS, a.RST.FlowLabel, a.RST.IPLen = 0, 0, 0, 0 // kept once, above
		return a, nil
	}
	icmp := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	a.Kind, a.ICMPType, a.ICMPCode = "icmpv6", icmp.TypeCode.Type(), icmp.TypeCode.Code()
	if len(icmp.Payload) >= 4 {
		a.Pointer = binary.BigEndian.Uint32(icmp.Payload)
		a.Quoted = len(icmp.Payload) - 4
	}
	return a, nil
}

func diffFields(a, b rstFields) []string {
	var d []string
	add := func(name string, x, y any) {
		if x != y {
			d = append(d, fmt.Sprintf("%s %v != %v", name, x, y))
		}
	}
	add("TTL", a.TTL, b.TTL)
	add("ID", a.ID, b.ID)
	add("DF", a.DF, b.DF)
	add("TOS", a.TOS, b.TOS)
	add("FlowLabel", a.FlowLabel, b.FlowLabel)
	add("IPLen", a.IPLen, b.IPLen)
	add("Flags", a.Flags, b.Flags)
	add("Seq", a.Seq, b.Seq)
	add("AckMinusSN", a.AckMinusSN, b.AckMinusSN)
	add("Window", a.Window, b.Window)
	add("DataOffset", a.DataOffset, b.DataOffset)
	add("Options", a.Options, b.Options)
	add("Urgent", a.Urgent, b.Urgent)
	add("Payload", a.Payload, b.Payload)
	return d
}

func randUint32(t *testing.T) uint32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(b[:])
}

// synRST sends one bare SYN with sequence number seq from src to dst over a
// raw socket in the client namespace and captures the reply on the
// client's veth with a packet socket, which sees the whole IP header for
// both families. The client kernel, which owns no socket for the SYN's
// source port, ignores the reply.
func synRST(p *netns.Pair, src netip.Addr, dst netip.AddrPort, seq uint32) (rstFields, error) {
	return synReply(p, src, dst, seq, nil)
}

// synReply is synRST for a SYN that carries payload (an SPA token, say).
// A reset for it acknowledges the payload too: AckMinusSN is then
// 1 + len(payload).
func synReply(p *netns.Pair, src netip.Addr, dst netip.AddrPort, seq uint32, payload []byte) (rstFields, error) {
	sport := 40000 + uint16(seq%20000)
	pkt, err := exchange(p, func() error { return sendSYN(src, dst, sport, seq, payload) },
		func(pkt gopacket.Packet) bool {
			tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			return ok && uint16(tcp.SrcPort) == dst.Port() && uint16(tcp.DstPort) == sport && replyFrom(pkt, dst.Addr())
		})
	if err != nil {
		return rstFields{}, fmt.Errorf("reply from %v to port %d: %w", dst, sport, err)
	}
	return rstFieldsOf(pkt, seq), nil
}

// exchange runs send inside the client namespace with a capture already
// open on the client's veth, so the reply cannot slip by before we listen,
// and returns the first captured packet addressed to the client that keep
// accepts, within captureTimeout.
func exchange(p *netns.Pair, send func() error, keep func(gopacket.Packet) bool) (gopacket.Packet, error) {
	var pkt gopacket.Packet
	err := p.Client.Do(func() error {
		ifi, err := net.InterfaceByName(p.ClientIf)
		if err != nil {
			return fmt.Errorf("interface: %w", err)
		}
		capFD, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(capFD)
		if err := unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(capFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("capture timeout: %w", err)
		}
		if err := send(); err != nil {
			return err
		}
		pkt, err = nextPacket(capFD, keep)
		return err
	})
	return pkt, err
}

// captureTimeout bounds the wait for a reply in exchange.
const captureTimeout = 2 * time.Second

// nextPacket reads the capture socket until keep accepts an IPv4 or IPv6
// packet sent to this host, or captureTimeout passes.
func nextPacket(fd int, keep func(gopacket.Packet) bool) (gopacket.Packet, error) {
	deadline := time.Now().Add(captureTimeout)
	// Reused: a packet that keep rejects is dropped before the next read,
	// and the one returned (which points into buf) ends the loop.
	buf := make([]byte, 2048)
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_HOST {
			continue // our own outgoing packet, or not for us
		}
		var first gopacket.LayerType
		switch ntohs(ll.Protocol) {
		case unix.ETH_P_IP:
			first = layers.LayerTypeIPv4
		case unix.ETH_P_IPV6:
			first = layers.LayerTypeIPv6
		default:
			continue
		}
		pkt := gopacket.NewPacket(buf[:n], first, gopacket.DecodeOptions{NoCopy: true})
		if keep(pkt) {
			return pkt, nil
		}
	}
	return nil, fmt.Errorf("nothing captured within %v", captureTimeout)
}

// replyFrom reports whether pkt's IP source is from.
func replyFrom(pkt gopacket.Packet, from netip.Addr) bool {
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		return netip.AddrFrom4([4]byte(ip.SrcIP.To4())) == from
	case *layers.IPv6:
		return netip.AddrFrom16([16]byte(ip.SrcIP.To16())) == from
	}
	return false
}

// sendRaw writes seg, a whole TCP or UDP segment, through a raw socket of
// protocol proto (unix.IPPROTO_TCP or IPPROTO_UDP) in the calling thread's
// namespace: the kernel adds the IP header, so seg is sent as the IP
// payload byte for byte.
func sendRaw(src, dst netip.Addr, proto int, seg []byte) error {
	var (
		family int
		bindSA unix.Sockaddr
		dstSA  unix.Sockaddr
	)
	if dst.Is4() {
		family = unix.AF_INET
		bindSA = &unix.SockaddrInet4{Addr: src.As4()}
		dstSA = &unix.SockaddrInet4{Addr: dst.As4()}
	} else {
		family = unix.AF_INET6
		bindSA = &unix.SockaddrInet6{Addr: src.As16()}
		dstSA = &unix.SockaddrInet6{Addr: dst.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	// Bound, so the kernel's source address is the one in our checksum.
	if err := unix.Bind(fd, bindSA); err != nil {
		return fmt.Errorf("bind raw socket to %v: %w", src, err)
	}
	if err := unix.Sendto(fd, seg, 0, dstSA); err != nil {
		return fmt.Errorf("send to %v: %w", dst, err)
	}
	return nil
}

// sendSYN writes a SYN (no options) carrying payload (nil: a bare SYN)
// through a raw IPPROTO_TCP socket: the kernel adds the IP header, we
// supply the TCP header and checksum.
func sendSYN(src netip.Addr, dst netip.AddrPort, sport uint16, seq uint32, payload []byte) error {
	seg := pkttest.TCPSegment(src, dst.Addr(), pkttest.TCP{SrcPort: sport, DstPort: dst.Port(), Seq: seq, Flags: pkttest.FlagSYN, Window: 64240}, payload)
	if err := sendRaw(src, dst.Addr(), unix.IPPROTO_TCP, seg); err != nil {
		return fmt.Errorf("send syn: %w", err)
	}
	return nil
}

// rstFieldsOf extracts the fields of a captured reply to a SYN with
// sequence number seq.
func rstFieldsOf(pkt gopacket.Packet, seq uint32) rstFields {
	var f rstFields
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		f.TTL, f.ID, f.DF, f.TOS, f.IPLen = ip.TTL, ip.Id, ip.Flags&layers.IPv4DontFragment != 0, ip.TOS, ip.Length
	case *layers.IPv6:
		f.TTL, f.TOS, f.FlowLabel, f.IPLen = ip.HopLimit, ip.TrafficClass, ip.FlowLabel, ip.Length
	}
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	f.Flags = tcpFlags(tcp)
	f.Seq = tcp.Seq
	f.AckMinusSN = tcp.Ack - seq
	f.Window = tcp.Window
	f.DataOffset = tcp.DataOffset
	f.Options = len(tcp.Options)
	f.Urgent = tcp.Urgent
	f.Payload = len(tcp.Payload)
	return f
}

func tcpFlags(t *layers.TCP) string {
	var s string
	for _, f := range []struct {
		on   bool
		name string
	}{{t.SYN, "SYN"}, {t.RST, "RST"}, {t.FIN, "FIN"}, {t.PSH, "PSH"}, {t.ACK, "ACK"}, {t.URG, "URG"}, {t.ECE, "ECE"}, {t.CWR, "CWR"}} {
		if f.on {
			if s != "" {
				s += "|"
			}
			s += f.name
		}
	}
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
func ntohs(v uint16) uint16 { return htons(v) }
