package main

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestSynSegment: the knock client's raw SYN is the SYN gopacket builds, its
// checksum included, over both families.
func TestSynSegment(t *testing.T) {
	for _, tt := range []struct {
		name     string
		src, dst netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.0.1")},
		{"ipv6", netip.MustParseAddr("fd00:77::2"), netip.MustParseAddr("fd00:77::1")},
	} {
		for _, payload := range [][]byte{nil, []byte("an odd-length token")} {
			got := synSegment(tt.src, netip.AddrPortFrom(tt.dst, 2222), 40001, 0xfeedf00d, payload)
			tcp := &layers.TCP{SrcPort: 40001, DstPort: 2222, Seq: 0xfeedf00d, SYN: true, Window: 64240}
			var network gopacket.NetworkLayer = &layers.IPv4{SrcIP: tt.src.AsSlice(), DstIP: tt.dst.AsSlice(), Protocol: layers.IPProtocolTCP}
			if tt.src.Is6() {
				network = &layers.IPv6{SrcIP: tt.src.AsSlice(), DstIP: tt.dst.AsSlice(), NextHeader: layers.IPProtocolTCP}
			}
			if err := tcp.SetNetworkLayerForChecksum(network); err != nil {
				t.Fatal(err)
			}
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, tcp, gopacket.Payload(payload)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, buf.Bytes()) {
				t.Errorf("%s, %d-byte payload:\n got %x\nwant %x", tt.name, len(payload), got, buf.Bytes())
			}
		}
	}
}
