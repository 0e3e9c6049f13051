package rst

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/knockwall/knockwall/internal/pkttest"
)

// syn4Packet is an IPv4 SYN from 192.0.2.7:40000 to 198.51.100.9:22 with
// payload, TOS 0x12 (ECN bits set).
func syn4Packet(payload []byte) []byte {
	ip := pkttest.IP{Src: netip.MustParseAddr("192.0.2.7"), Dst: netip.MustParseAddr("198.51.100.9"), TOS: 0x12, TTL: 61, ID: 777}
	return ip.TCP(pkttest.TCP{SrcPort: 40000, DstPort: 22, Seq: 123456, Flags: pkttest.FlagSYN, Window: 64240}, payload)
}

// TestBuild4: the IPv4 reset for a routed host is the kernel's closed-port
// reset from that host: addresses and ports swapped, RST|ACK acknowledging
// the SYN and its payload, seq 0, window 0, DF, id 0, the TTL given, the
// TOS without ECN, and valid checksums.
func TestBuild4(t *testing.T) {
	syn := syn4Packet([]byte("token"))
	out, err := Build4(nil, syn, 63)
	if err != nil {
		t.Fatal(err)
	}
	p := gopacket.NewPacket(out, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("not IPv4+TCP: %v", p)
	}
	if ip.SrcIP.String() != "198.51.100.9" || ip.DstIP.String() != "192.0.2.7" || ip.TTL != 63 || ip.TOS != 0x10 ||
		ip.Flags != layers.IPv4DontFragment || ip.Id != 0 || ip.Length != 40 {
		t.Errorf("IP header %+v", ip)
	}
	if tcp.SrcPort != 22 || tcp.DstPort != 40000 || !tcp.RST || !tcp.ACK || tcp.SYN || tcp.Seq != 0 || tcp.Ack != 123456+1+5 || tcp.Window != 0 {
		t.Errorf("TCP header %+v", tcp)
	}
	// Checksums: recompute with gopacket and compare.
	wantIP, wantTCP := ip.Checksum, tcp.Checksum
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	q := gopacket.NewPacket(buf.Bytes(), layers.LayerTypeIPv4, gopacket.Default)
	if q.Layer(layers.LayerTypeIPv4).(*layers.IPv4).Checksum != wantIP || q.Layer(layers.LayerTypeTCP).(*layers.TCP).Checksum != wantTCP {
		t.Error("checksums differ from gopacket's")
	}
	for _, bad := range [][]byte{syn[:30], append([]byte{0x46}, syn[1:]...)} {
		if _, err := Build4(nil, bad, 63); err == nil {
			t.Errorf("Build4 accepted %x", bad[:4])
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		var buf [reset4Len]byte
		_, _ = Build4(buf[:0], syn, 63)
	}); n != 0 {
		t.Errorf("Build4 allocates %v times", n)
	}
}
