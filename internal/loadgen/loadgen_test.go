package loadgen

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestFrameChecksums: a flood frame, decoded and built again by gopacket
// with its own checksums, is the same frame (up to Ethernet padding), so the receiving kernel takes
// it for genuine.
func TestFrameChecksums(t *testing.T) {
	g := &Gen{srcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, dstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	src, dst := netip.MustParseAddr("10.78.3.4"), netip.MustParseAddr("10.77.0.1")
	for _, k := range []Kind{SYN, UDP} {
		f := g.frame(k, src, dst, 40001, 9000, 0xabcdef01)
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("kind %d: frame does not decode: %v", k, el.Error())
		}
		var ls []gopacket.SerializableLayer
		for _, l := range pkt.Layers() {
			sl, ok := l.(gopacket.SerializableLayer)
			if !ok {
				t.Fatalf("kind %d: layer %v is not serializable", k, l.LayerType())
			}
			ls = append(ls, sl)
		}
		ip := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		switch l4 := pkt.TransportLayer().(type) {
		case *layers.TCP:
			l4.SetNetworkLayerForChecksum(ip)
		case *layers.UDP:
			l4.SetNetworkLayerForChecksum(ip)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		// gopacket pads the frame to Ethernet's minimum; the kernel
		// would too.
		if !bytes.Equal(buf.Bytes()[:len(f)], f) {
			t.Errorf("kind %d:\n  frame   %x\n  rebuilt %x", k, f, buf.Bytes())
		}
	}
}
