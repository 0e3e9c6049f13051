// Package loadgen sends bounded floods of TCP SYNs and UDP datagrams from
// many (spoofed) source addresses through an AF_PACKET socket, for
// knockwall's end-to-end benchmarks and flood tests. It is test tooling: it
// only ever sends on the interface it is given, inside the network namespace
// the caller opened it in, and every run is bounded in packets and time.
package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/knockwall/knockwall/internal/inet"
)

// Kind is what each packet is.
type Kind uint8

// Kinds.
const (
	SYN Kind = iota // TCP SYN
	UDP             // UDP datagram, empty
)

// Config describes a flood.
type Config struct {
	Kind    Kind
	Dst     netip.Addr   // IPv4
	Sources netip.Prefix // sources drawn at random from here
	Ports   []uint16     // destination ports drawn at random
	// Distinct is how many different frames to prebuild (sources × ports
	// mixes); the flood cycles through them. Default 4096.
	Distinct int
	Rate     int           // packets per second; 0 sends as fast as possible
	Count    int           // upper bound on packets (required)
	Duration time.Duration // upper bound on time (required)
	Seed     uint64
}

// Stats is what a run did.
type Stats struct {
	Sent    int
	Elapsed time.Duration
}

// PPS is the achieved send rate.
func (s Stats) PPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Sent) / s.Elapsed.Seconds()
}

// Gen is an AF_PACKET sender bound to one interface.
type Gen struct {
	fd      int
	ifindex int
	srcMAC  net.HardwareAddr
	dstMAC  net.HardwareAddr
}

// Open binds a packet socket to iface, in the calling thread's network
// namespace, sending frames to dstMAC.
func Open(iface string, dstMAC net.HardwareAddr) (*Gen, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
	if err != nil {
		return nil, fmt.Errorf("loadgen: packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("loadgen: bind: %w", err)
	}
	return &Gen{fd: fd, ifindex: ifi.Index, srcMAC: ifi.HardwareAddr, dstMAC: dstMAC}, nil
}

// Close closes the socket.
func (g *Gen) Close() error { return unix.Close(g.fd) }

// ErrUnbounded is returned for a flood without a packet and a time bound.
var ErrUnbounded = errors.New("loadgen: a flood needs both Count and Duration")

// Run sends the flood until Count packets, Duration, or ctx ends, whichever
// comes first.
func (g *Gen) Run(ctx context.Context, c Config) (Stats, error) {
	if c.Count <= 0 || c.Duration <= 0 {
		return Stats{}, ErrUnbounded
	}
	if !c.Dst.Is4() || !c.Sources.Addr().Is4() || len(c.Ports) == 0 {
		return Stats{}, errors.New("loadgen: IPv4 destination, sources and ports needed")
	}
	n := c.Distinct
	if n <= 0 {
		n = 4096
	}
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x5eed))
	frames := make([][]byte, n)
	for i := range frames {
		src := randomIn(rng, c.Sources)
		port := c.Ports[rng.IntN(len(c.Ports))]
		frames[i] = g.frame(c.Kind, src, c.Dst, uint16(1024+rng.IntN(60000)), port, rng.Uint32())
	}

	start := time.Now()
	deadline := start.Add(c.Duration)
	var st Stats
	const burst = 64
	for st.Sent < c.Count {
		now := time.Now()
		if now.After(deadline) || ctx.Err() != nil {
			break
		}
		if c.Rate > 0 {
			due := int(now.Sub(start).Seconds() * float64(c.Rate))
			if st.Sent >= due {
				time.Sleep(200 * time.Microsecond)
				continue
			}
		}
		for range burst {
			if st.Sent >= c.Count {
				break
			}
			if _, err := unix.Write(g.fd, frames[st.Sent%n]); err != nil {
				if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
					continue // the device queue is full; that is the load
				}
				st.Elapsed = time.Since(start)
				return st, fmt.Errorf("loadgen: send: %w", err)
			}
			st.Sent++
		}
	}
	st.Elapsed = time.Since(start)
	return st, nil
}

// Packet is one packet of a script: what it is, from which (spoofed)
// source, between which ports.
type Packet struct {
	Kind         Kind
	Src          netip.Addr // IPv4
	Sport, Dport uint16
}

// Send sends each packet of script once, in order, to dst, waiting gap
// between two packets: a spoofed client's knocks, say, rather than a
// flood. It is bounded by the script's length and by ctx.
func (g *Gen) Send(ctx context.Context, dst netip.Addr, script []Packet, gap time.Duration) (int, error) {
	if !dst.Is4() {
		return 0, errors.New("loadgen: IPv4 destination needed")
	}
	for i, p := range script {
		if !p.Src.Is4() {
			return i, errors.New("loadgen: IPv4 sources needed")
		}
		f := g.frame(p.Kind, p.Src, dst, p.Sport, p.Dport, uint32(i))
		for {
			if err := ctx.Err(); err != nil {
				return i, err
			}
			_, err := unix.Write(g.fd, f)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				return i, fmt.Errorf("loadgen: send: %w", err)
			}
			time.Sleep(time.Millisecond) // the device queue is full: every packet of a script counts
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return len(script), nil
}

func randomIn(rng *rand.Rand, p netip.Prefix) netip.Addr {
	base := binary.BigEndian.Uint32(p.Masked().Addr().AsSlice())
	hostBits := 32 - p.Bits()
	var off uint32
	if hostBits > 0 {
		off = rng.Uint32() & (1<<hostBits - 1)
		if off == 0 {
			off = 1
		}
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], base+off)
	return netip.AddrFrom4(b)
}

// frame builds an Ethernet frame with an IPv4 TCP SYN or UDP datagram,
// checksums filled in, so the receiving kernel treats it as genuine.
func (g *Gen) frame(k Kind, src, dst netip.Addr, sport, dport uint16, seq uint32) []byte {
	var l4 []byte
	proto := uint8(inet.ProtoTCP)
	if k == UDP {
		proto = inet.ProtoUDP
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint16(l4[4:], 8)
	} else {
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint32(l4[4:], seq)
		l4[12] = 5 << 4
		l4[13] = 0x02
		binary.BigEndian.PutUint16(l4[14:], 64240)
	}
	s, d := src.As4(), dst.As4()
	csum := inet.Checksum(inet.Sum(inet.Pseudo4(s, d, proto, len(l4)), l4))
	if k == UDP {
		binary.BigEndian.PutUint16(l4[6:], inet.UDPChecksum(csum))
	} else {
		binary.BigEndian.PutUint16(l4[16:], csum)
	}

	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8] = 64
	ip[9] = proto
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], inet.Checksum(inet.Sum(0, ip)))

	f := make([]byte, 0, 14+len(ip)+len(l4))
	f = append(f, g.dstMAC...)
	f = append(f, g.srcMAC...)
	f = append(f, 0x08, 0x00)
	f = append(f, ip...)
	return append(f, l4...)
}
